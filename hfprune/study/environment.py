"""What a study's numbers depend on beyond the recipe: threads, device, processes and library versions.

Recorded in ``study.json`` when a study starts; a resumed run on another environment says so in one line,
since its trials may then differ in the last digits from the ones recorded before (see the README's
"What reproduces").
"""

from __future__ import annotations

import platform
from importlib import metadata

import torch

LIBRARIES = ("hfprune", "torch", "transformers", "accelerate", "numpy", "datasets", "safetensors")
COMPARED = ("torch_threads", "device", "processes", "deterministic", "libraries")  # what changes the numbers


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device, processes: int, deterministic: bool, trial_threads: int | None = None) -> dict:
    """This process's environment as ``study.json`` records it (``trial_threads``: torch threads of a trial,
    when the recipe's execution section fixes them)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "torch_threads": trial_threads or torch.get_num_threads(),
        "device": f"{device.type}: {name}",
        "processes": processes,
        "deterministic": deterministic,
        "libraries": {library: _version(library) for library in LIBRARIES},
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def differences(recorded: dict, current: dict) -> list[str]:
    """What differs between a recorded and the current environment, as ``key: before -> now`` phrases."""
    return [f"{key}: {recorded.get(key)} -> {current.get(key)}" for key in COMPARED
            if recorded.get(key) != current.get(key)]
