"""``hfprune bench``: how fast dense and pruned language models generate, measured side by side in one run.

Every checkpoint (a causal LM, or the language model of a vision-language model) is loaded once; all get the same
random prompts (seeded, within the smallest vocabulary). One run is a prefill of the prompts (``batch × prompt``
tokens, the KV cache filled, logits of the last position only, as ``generate`` asks) and ``new_tokens`` greedy decode
steps, each feeding the token just chosen with the cache (no early stop). After ``warmup`` runs of every model, one
profiling run per model counts the MACs (every ``nn.Linear`` by hooks, plus the attention products ``QKᵀ`` and
``AV`` over the causal context: ``2 × query width × context`` per token and layer) and its working memory; then
``repeats`` timed runs go round the models in turn (interleaved, so drift of the machine hits all alike) and each
figure is the median over the repeats.

Figures per model: parameters (all, and those of the decoder layers), MACs per run and per token, prefill and
decode tokens/s, decode latency per token, the KV cache at the end of a run and the peak memory: its weights plus
the most the run added — ``torch.cuda.max_memory_allocated`` above what was allocated before it on CUDA; on the
CPU the resident set sampled every millisecond above where it stood (an estimate: freed memory the allocator keeps
is not seen again).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from hfprune.errors import HfpruneError, reason
from hfprune.evaluation.lm_eval_bridge import causal_lm_of
from hfprune.io import quiet_hf_progress
from hfprune.models.structure import VISION_LANGUAGE, find_blocks, model_kind

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class BenchSettings:
    batch_size: int = 1
    prompt_length: int = 128
    new_tokens: int = 64
    device: str = "cpu"
    dtype: str = "auto"
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    trust_remote_code: bool = False

    def check(self) -> None:
        """One HfpruneError line for a setting that cannot run, before any model is loaded."""
        for name in ("batch_size", "prompt_length", "new_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise HfpruneError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise HfpruneError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.dtype not in DTYPES:
            raise HfpruneError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise HfpruneError(f"--device {self.device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise HfpruneError(f"--device {self.device}: CUDA is not available here; use --device cpu")


@dataclass
class ModelFigures:
    """What ``hfprune bench`` reports for one checkpoint."""

    name: str
    path: str
    parameters: int
    decoder_parameters: int
    layers: int
    macs: int = 0                 # one run (prefill + decode), whole batch
    macs_per_token: float = 0.0   # per token processed (prompt and generated)
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    latency_ms_per_token: float = 0.0   # one decode step (all sequences of the batch)
    kv_cache_mib: float = 0.0
    weights_mib: float = 0.0
    peak_memory_mib: float = 0.0
    prefill_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)


def load_language_model(path: str, settings: BenchSettings) -> PreTrainedModel:
    """The causal LM of a checkpoint (for a vision-language model, its language model with the LM head), in eval
    mode on the bench's device and dtype; one HfpruneError line when it cannot be loaded."""
    dtype = DTYPES[settings.dtype]
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
        try:
            vision_language = model_kind(config) == VISION_LANGUAGE
        except HfpruneError:  # a model type only its own code knows
            vision_language = False
        with quiet_hf_progress():
            if vision_language:
                from transformers import AutoModelForImageTextToText

                model = causal_lm_of(AutoModelForImageTextToText.from_pretrained(path, dtype=dtype))
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype,
                                                             trust_remote_code=settings.trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        raise HfpruneError(f"cannot load '{path}' as a language model ({reason(error)}); give a checkpoint directory "
                           "or Hub id of a causal LM (--trust-remote-code for one with its own model code)") from None
    return model.to(settings.device).eval()


def _decoder_parameters(model: nn.Module) -> tuple[int, int, list[int]]:
    """(parameters of the decoder layers, number of layers, query width of each layer's attention)."""
    blocks = find_blocks(model)
    parameters = sum(param.numel() for param in blocks.layers.parameters())
    widths = []
    for index, roles in enumerate(blocks.roles):
        linears = dict(blocks.layers[index].named_modules())
        attention = roles.attention
        if "q" in attention:
            widths.append(linears[attention["q"]].out_features)
        elif roles.heads is not None:
            widths.append(roles.heads.attention * roles.heads.dim)
        else:
            widths.append(0)
    return parameters, len(blocks), widths


class _LinearMacs:
    """Forward hooks that add up ``positions × in × out`` of every ``nn.Linear`` call."""

    def __init__(self, model: nn.Module):
        self.total = 0
        self.handles = [module.register_forward_hook(self._count) for module in model.modules()
                        if isinstance(module, nn.Linear)]

    def _count(self, module: nn.Linear, inputs, output) -> None:
        self.total += inputs[0].numel() // module.in_features * module.in_features * module.out_features

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def attention_macs(query_widths: list[int], batch: int, prompt: int, new_tokens: int) -> int:
    """``QKᵀ`` and ``AV`` of one run over the causal context: a token at position t (1-based) attends to t
    positions, ``2 × query width × t`` MACs per layer."""
    positions = prompt * (prompt + 1) // 2 + sum(prompt + step for step in range(1, new_tokens + 1))
    return 2 * batch * positions * sum(query_widths)


def _cache_bytes(cache) -> int:
    layers = getattr(cache, "layers", None) or []
    total = 0
    for layer in layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


class _Clock:
    """Wall time on the bench's device (CUDA work finished before each reading)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


@torch.inference_mode()
def generate_once(model: PreTrainedModel, prompts: torch.Tensor, new_tokens: int, clock: Callable[[], float],
                  keep_logits: bool) -> tuple[float, float, int]:
    """(prefill seconds, decode seconds, KV-cache bytes at the end) of one greedy run of ``new_tokens`` steps."""
    extra = {"logits_to_keep": 1} if keep_logits else {}
    started = clock()
    output = model(input_ids=prompts, use_cache=True, **extra)
    token = output.logits[:, -1].argmax(-1, keepdim=True)
    prefilled = clock()
    cache = output.past_key_values
    for _ in range(new_tokens):
        output = model(input_ids=token, past_key_values=cache, use_cache=True, **extra)
        cache = output.past_key_values
        token = output.logits[:, -1].argmax(-1, keepdim=True)
    finished = clock()
    return prefilled - started, finished - prefilled, _cache_bytes(cache)


class _PeakMemory:
    """The most a block of work adds to the device's memory: CUDA's allocator peak, or the sampled resident set."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self) -> "_PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil

        process, self.stop = psutil.Process(), threading.Event()
        self.base = process.memory_info().rss
        self.high = self.base

        def sample() -> None:
            while not self.stop.is_set():
                self.high = max(self.high, process.memory_info().rss)
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak = self.high - self.base


def _label(path: str, paths: list[str]) -> str:
    """A model's name in the tables: its folder's name, or the whole path where two folders share a name."""
    name = Path(path).name or path
    return name if sum((Path(other).name or other) == name for other in paths) == 1 else path


def _tensor_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def bench(paths: list[str], settings: BenchSettings = BenchSettings(),
          progress: Callable[[str], None] | None = None) -> dict:
    """Measure every checkpoint of ``paths`` side by side (see the module); returns ``{"settings", "models",
    "relative"}``: the figures per model, and each model's figures relative to the first one's."""
    settings.check()
    if not paths:
        raise HfpruneError("give at least one model to bench")
    for path in paths:  # every path before any model is loaded
        if not Path(path).exists() and (path.startswith((".", "/", "~")) or path.count("/") != 1):
            raise HfpruneError(f"model '{path}' not found: give a checkpoint directory or a Hub id (NAMESPACE/NAME)")
    say = progress or (lambda text: None)
    device, clock = torch.device(settings.device), _Clock(torch.device(settings.device))
    models, figures = [], []
    for path in paths:
        say(f"loading {path}")
        model = load_language_model(path, settings)
        decoder, layers, widths = _decoder_parameters(model)
        models.append((model, widths, _accepts_logits_to_keep(model)))
        figures.append(ModelFigures(_label(path, paths), path, model.num_parameters(), decoder, layers,
                                    weights_mib=_tensor_bytes(model) / 2 ** 20))
    vocabulary = min(model.get_input_embeddings().num_embeddings for model, _, _ in models)
    generator = torch.Generator().manual_seed(settings.seed)
    prompts = torch.randint(0, vocabulary, (settings.batch_size, settings.prompt_length),
                            generator=generator).to(device)
    tokens = settings.batch_size * (settings.prompt_length + settings.new_tokens)
    for _ in range(settings.warmup):
        for model, _, keep in models:
            generate_once(model, prompts, settings.new_tokens, clock, keep)
    for (model, widths, keep), row in zip(models, figures):  # profiling: MACs, memory, KV cache
        say(f"profiling {row.path}")
        counter = _LinearMacs(model)
        try:
            with _PeakMemory(device) as memory:
                _, _, cache = generate_once(model, prompts, settings.new_tokens, clock, keep)
        finally:
            counter.remove()
        row.macs = counter.total + attention_macs(widths, settings.batch_size, settings.prompt_length,
                                                  settings.new_tokens)
        row.macs_per_token = row.macs / tokens
        row.kv_cache_mib = cache / 2 ** 20
        row.peak_memory_mib = row.weights_mib + max(0, memory.peak) / 2 ** 20
    for repeat in range(settings.repeats):  # timed, interleaved
        say(f"timing, round {repeat + 1} of {settings.repeats}")
        for (model, _, keep), row in zip(models, figures):
            prefill, decode, _ = generate_once(model, prompts, settings.new_tokens, clock, keep)
            row.prefill_s.append(prefill)
            row.decode_s.append(decode)
    for row in figures:
        prefill, decode = statistics.median(row.prefill_s), statistics.median(row.decode_s)
        row.prefill_tokens_per_s = settings.batch_size * settings.prompt_length / prefill
        row.decode_tokens_per_s = settings.batch_size * settings.new_tokens / decode
        row.latency_ms_per_token = 1000 * decode / settings.new_tokens
    return {"settings": {**asdict(settings), "threads": torch.get_num_threads(), "vocabulary_used": vocabulary},
            "models": [asdict(row) for row in figures], "relative": relative(figures)}


RATIO_FIELDS = ("parameters", "decoder_parameters", "macs", "prefill_tokens_per_s", "decode_tokens_per_s",
                "latency_ms_per_token", "peak_memory_mib")


def relative(figures: list[ModelFigures]) -> list[dict]:
    """Each model's figures divided by the first model's (the baseline)."""
    base = figures[0]
    return [{"name": row.name, **{name: getattr(row, name) / getattr(base, name) if getattr(base, name) else None
                                  for name in RATIO_FIELDS}} for row in figures]


def bench_tables(result: dict) -> list:
    """Two rich tables of :func:`bench`'s result: the figures of every model, and each relative to the first."""
    from rich.table import Table

    settings, rows = result["settings"], result["models"]
    figures = Table(title=f"batch {settings['batch_size']}, prompt {settings['prompt_length']}, "
                          f"{settings['new_tokens']} new tokens, {settings['device']} {settings['dtype']}, "
                          f"{settings['threads']} threads, median of {settings['repeats']}")
    for column in ("model", "params", "decoder params", "layers", "MACs/token", "prefill tok/s", "decode tok/s",
                   "ms/token", "KV cache MiB", "peak MiB"):
        figures.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        figures.add_row(row["name"], f"{row['parameters'] / 1e6:,.1f}M", f"{row['decoder_parameters'] / 1e6:,.1f}M",
                        str(row["layers"]), f"{row['macs_per_token'] / 1e6:,.2f}M",
                        f"{row['prefill_tokens_per_s']:,.1f}", f"{row['decode_tokens_per_s']:,.2f}",
                        f"{row['latency_ms_per_token']:,.1f}", f"{row['kv_cache_mib']:,.1f}",
                        f"{row['peak_memory_mib']:,.0f}")
    ratios = Table(title=f"relative to {rows[0]['name']}")
    ratios.add_column("model")
    for name in RATIO_FIELDS:
        ratios.add_column(name.replace("_", " "), justify="right")
    for row in result["relative"]:
        ratios.add_row(row["name"], *("—" if row[name] is None else f"{row[name]:.3f}x" for name in RATIO_FIELDS))
    return [figures, ratios]
