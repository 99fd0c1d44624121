"""A text corpus as a language-model study trains on it: documents split into train and test (seeded, by
document), and the fixed-length token blocks cut from them.

The recipe's ``data.text`` section (:class:`TextSection`) chooses the tokenizer built here when the model is
pretrained by hfprune (byte-level, or a small BPE trained on the train split), the share of documents held out
as the test split (for sources without their own), a seeded subset of the documents and the text field.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field

from hfprune.config.schema import Section
from hfprune.data.llava import subsample
from hfprune.data.text import WHOLE
from hfprune.errors import HfpruneError
from hfprune.seeding import stable_seed


class TextSection(Section):
    """``data.text``: how a text corpus is tokenised and split (causal-LM studies)."""

    tokenizer: Literal["bpe", "byte"] = Field(
        "bpe", description="for a model pretrained here (no model.pretrained): byte (the 256 bytes + "
                           "<|endoftext|>) or bpe (byte-level BPE trained on the train split, deterministically); "
                           "saved with every checkpoint. A pretrained model brings its own tokenizer")
    vocab_size: int = Field(512, gt=256, le=1 << 20, description="bpe: tokens in all (bytes, <|endoftext|>, "
                                                                 "merges); model.config.vocab_size must hold them")
    min_frequency: int = Field(2, ge=1, description="bpe: pairs seen fewer times are never merged")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="share of the documents held out as the test split "
                                                              "(seeded; sources with their own test split keep it)")
    documents: Optional[int] = Field(None, gt=1, description="use a seeded subset of this many documents (before "
                                                             "the split): a smaller corpus for quick studies")
    field: str = Field("text", description="the text field of .jsonl/.json records and dataset columns")


def split_documents(splits: dict[str, list[str]], section: TextSection, seed: int) -> tuple[list[str], list[str]]:
    """(train, test) documents: a source's own train and test (or validation) splits, else a seeded
    ``test_fraction`` of its documents (at least one) as test; ``documents`` keeps a seeded subset first. Both
    keep the source's order."""
    own_test = next((name for name in ("test", "validation") if name in splits), None)
    if WHOLE not in splits:
        if "train" not in splits or own_test is None:
            raise HfpruneError(f"the text dataset has splits {', '.join(splits)}; hfprune needs 'train' and 'test' "
                               "(or 'validation'), or a source without splits")
        train, test = splits["train"], splits[own_test]
        if section.documents:
            train = [train[i] for i in subsample(len(train), section.documents, stable_seed(seed, "documents"))]
            keep = max(1, round(section.documents * section.test_fraction))
            test = [test[i] for i in subsample(len(test), keep, stable_seed(seed, "test documents"))]
        return train, test
    documents = splits[WHOLE]
    if section.documents:
        documents = [documents[i] for i in subsample(len(documents), section.documents, stable_seed(seed, "documents"))]
    if len(documents) < 2:
        raise HfpruneError(f"the text source holds {len(documents)} document(s); a train and a test split need at "
                           "least two (a .txt file's documents are separated by blank lines)")
    count = min(len(documents) - 1, max(1, round(len(documents) * section.test_fraction)))
    held_out = set(subsample(len(documents), count, stable_seed(seed, "test split")))
    return ([text for i, text in enumerate(documents) if i not in held_out],
            [text for i, text in enumerate(documents) if i in held_out])


class TokenBlocks(torch.utils.data.Dataset):
    """Blocks of token ids ``[N, seqlen]``, every token supervised: an item (or a list of indices: a whole batch
    at once) is ``{"input_ids", "labels"}`` with ``labels == input_ids``; the model shifts them."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks.long().contiguous()

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index):
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        ids = self.blocks[index]
        return {"input_ids": ids, "labels": ids}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self[indices]

    def subset(self, limit: int | None, seed: int) -> "TokenBlocks":
        """A seeded subset of at most ``limit`` blocks, in order (all of them for None)."""
        return TokenBlocks(self.blocks[subsample(len(self), limit, seed)])
