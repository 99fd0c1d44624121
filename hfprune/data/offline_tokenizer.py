"""Tokenizers made here, with nothing downloaded: byte-level (the 256 bytes) or a small byte-level BPE trained
with the ``tokenizers`` library on the training texts. Both are GPT-2-style byte-level (any text round-trips) and
have one special token, ``<|endoftext|>`` (the last id), which begins and ends documents and pads. They are plain
``PreTrainedTokenizerFast`` objects: saved beside a model, ``AutoTokenizer.from_pretrained`` loads them.

Training is deterministic: the same texts in the same order and the same ``vocab_size`` give the same tokenizer
(the trainer counts pairs exactly and breaks ties by the pair itself).
"""

from __future__ import annotations

from typing import Literal, Sequence

from transformers import PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
BYTES = 256
TokenizerKind = Literal["byte", "bpe"]


def _byte_level(model):
    from tokenizers import Tokenizer, decoders, pre_tokenizers

    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def byte_symbols() -> list[str]:
    """The symbol GPT-2's byte-level pre-tokenizer writes for each byte value 0..255 (its ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    symbols, extra = {}, 0
    for byte in range(BYTES):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(BYTES + extra)
            extra += 1
    return [symbols[byte] for byte in range(BYTES)]


def _byte_tokenizer():
    from tokenizers import models

    vocab = {symbol: byte for byte, symbol in enumerate(byte_symbols())}  # token id = byte value
    tokenizer = _byte_level(models.BPE(vocab=vocab, merges=[]))
    tokenizer.add_special_tokens([END_OF_TEXT])  # the last id, 256
    return tokenizer


def _bpe_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int):
    from tokenizers import models, pre_tokenizers, trainers

    tokenizer = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=min_frequency,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer)
    tokenizer.add_special_tokens([END_OF_TEXT])  # the last id
    return tokenizer


def build_tokenizer(kind: TokenizerKind, texts: Sequence[str] = (), vocab_size: int = 512,
                    min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """A ``byte`` tokenizer (257 tokens), or a ``bpe`` one of at most ``vocab_size`` tokens trained on ``texts``
    (pairs seen fewer than ``min_frequency`` times are never merged)."""
    if kind == "byte":
        backend = _byte_tokenizer()
    elif kind == "bpe":
        if vocab_size <= BYTES:
            raise ValueError(f"a bpe vocabulary needs more than the {BYTES} bytes and <|endoftext|>, got {vocab_size}")
        backend = _bpe_tokenizer(texts, vocab_size, min_frequency)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose byte or bpe")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, clean_up_tokenization_spaces=False)
