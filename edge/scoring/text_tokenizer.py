"""The checkpoint's tokenizer from the bundle's ``tokenizer.json``, through the ``tokenizers`` library (no torch).

Truncation is the library's own, configured as ``transformers`` configures it for ``tokenizer(texts,
padding=True, truncation=True, max_length=77)`` (77 tokens, the special tokens counted); :meth:`encode` pads
as it does (right, with the pad token, to the longest text of the batch). The text tower itself never
pads: it batches texts of equal token count (:func:`edge.scoring.text_encoder.length_batches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import BackendError, BundleError, LabelError

TEXT_EXTRA_HINT = "install the text extra: pip install 'biolingual-edge[text]'"


@dataclass(frozen=True)
class TokenBatch:
    """Token ids and attention mask of a batch, both ``(N, S)`` int64, ``S`` <= the maximum length."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


def reject_empty(texts: list[str]) -> None:
    """Raise :class:`LabelError` naming the first text that is empty after stripping whitespace."""
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise LabelError(f"text {empty[0] + 1} of {len(texts)} is empty", "give every label or query some words")


def _load(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise BackendError("the `tokenizers` package is not installed (needed to embed text)",
                           TEXT_EXTRA_HINT) from e
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception for malformed JSON
        raise BundleError(f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0]})",
                          "re-export it with `biolingual-export text-onnx`") from e


class BundleTokenizer:
    """``texts -> TokenBatch`` exactly as the checkpoint's ``transformers`` tokenizer."""

    def __init__(self, path: Path, max_tokens: int, pad_id: int, pad_token: str) -> None:
        self.max_tokens = max_tokens
        self.pad_id = pad_id
        self._truncating = _load(path)
        self._truncating.no_padding()
        self._truncating.enable_truncation(max_length=max_tokens)
        self._counting = _load(path)
        self._counting.no_truncation()
        self._counting.no_padding()

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can emit (added tokens included)."""
        return int(self._truncating.get_vocab_size(with_added_tokens=True))

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, truncated to the maximum length, unpadded; empty texts raise :class:`LabelError`."""
        reject_empty(texts)
        return [e.ids for e in self._truncating.encode_batch(texts)]

    def encode(self, texts: list[str]) -> TokenBatch:
        """Tokenise a batch, right-padded with the pad token to its longest text (empty texts are refused)."""
        return pad(self.ids(texts), self.pad_id)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Untruncated length of each text in tokens, special tokens included."""
        return [len(e.ids) for e in self._counting.encode_batch(texts)]


def pad(rows: list[list[int]], pad_id: int) -> TokenBatch:
    """Token id rows right-padded with ``pad_id`` to the longest, and the mask of the real tokens."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return TokenBatch(ids, mask)
