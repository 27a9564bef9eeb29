"""The bundle's text tower (ONNX + ``tokenizer.json``): any text -> the shared 512-d space, without torch.

Used by ``biolingual-edge labels add`` (new species on the unit or at the desk) and by the desk's free-text
search. Loaded only for those commands; the daemon never holds it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.errors import BackendError, BundleError
from edge.model.backends.int8_path import keep_int8_exact
from edge.model.bundle import Bundle, ModelEntry, open_bundle
from edge.scoring.text_tokenizer import BundleTokenizer

log = logging.getLogger(__name__)

TEXT_PRECISIONS = ("fp32", "int8")
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
OUTPUT_NAME = "text_embeds"
EMBED_BATCH = 64
"""Most texts per ONNX Runtime call; a call holds texts of one token count only, so nothing is padded."""
# Keys of a text encoder's manifest ``details`` (written by ``biolingual-export text-onnx``).
MODEL_REVISION_KEY = "model_revision"
VOCAB_SIZE_KEY = "vocab_size"
"""Rows of the encoder's token-embedding table."""
TOKENIZER_SHA_KEY = "tokenizer_sha256"
MAX_TOKENS_KEY = "max_tokens"
PAD_ID_KEY = "pad_id"
PAD_TOKEN_KEY = "pad_token"
PARITY_KEY = "parity"
"""Its parity numbers and verdict (``passed``) against torch (fp32) or fp32 (int8)."""


def add_command(bundle: Bundle, precision: str = "fp32") -> str:
    """The workstation command that adds a text encoder (and tokenizer) to ``bundle``."""
    extra = f" --precision {precision}" if precision != "fp32" else ""
    return f"`biolingual-export text-onnx --model MODEL --bundle {bundle.root}{extra}`"


def add_hint(bundle: Bundle, precision: str = "fp32") -> str:
    return f"add it on the workstation: {add_command(bundle, precision)}"


def text_entry(bundle: Bundle, precision: str) -> ModelEntry:
    """The manifest entry of the text encoder at ``precision``; a :class:`BundleError` naming the fix if absent."""
    entry = bundle.manifest.text_encoders.get(precision)
    if entry is None:
        have = ", ".join(sorted(bundle.manifest.text_encoders)) or "none"
        raise BundleError(f"bundle {bundle.root} has no {precision} text encoder (it has: {have})",
                          add_hint(bundle, precision))
    if not bundle.manifest.tokenizer:
        raise BundleError(f"bundle {bundle.root} has a text encoder but no tokenizer.json", add_hint(bundle))
    missing = [k for k in (MAX_TOKENS_KEY, PAD_ID_KEY, PAD_TOKEN_KEY, VOCAB_SIZE_KEY) if k not in entry.details]
    if missing:
        raise BundleError(f"the {precision} text encoder entry of {bundle.root} lacks {', '.join(missing)}",
                          f"re-export it: {add_command(bundle, precision)}")
    return entry


def _check_matches(bundle: Bundle, entry: ModelEntry, tokenizer: BundleTokenizer) -> None:
    """The encoder must be this bundle's checkpoint, and the tokenizer the one it was exported with."""
    details = entry.details
    revision = details.get(MODEL_REVISION_KEY)
    if revision != bundle.manifest.model_revision:
        raise BundleError(f"the text encoder {entry.path} is from checkpoint {revision}, the bundle's audio "
                          f"encoder from {bundle.manifest.model_revision}", add_hint(bundle, entry.precision))
    rows = int(details[VOCAB_SIZE_KEY])
    tokenizer_sha = bundle.manifest.files.get(bundle.manifest.tokenizer)
    if tokenizer.vocab_size > rows or details.get(TOKENIZER_SHA_KEY) != tokenizer_sha:
        raise BundleError(
            f"{bundle.manifest.tokenizer} ({tokenizer.vocab_size} tokens) does not match the vocabulary of "
            f"{entry.path} ({rows}-row embedding table, exported with another tokenizer)",
            f"export the tokenizer and the text encoder together: {add_command(bundle, entry.precision)}")


def length_batches(lengths: list[int], cap: int = EMBED_BATCH) -> list[np.ndarray]:
    """Indices of the texts grouped by token count, each group cut into runs of at most ``cap``.

    A batch of equal lengths needs no padding, so the tower computes exactly the texts' tokens: a padded
    batch of label prompts computes 1.2-1.4x as many (``benchmarks/text_levers.py``).
    """
    counts = np.asarray(lengths)
    order = np.argsort(counts, kind="stable")
    starts = np.flatnonzero(np.diff(counts[order], prepend=-1))
    groups = np.split(order, starts[1:])
    return [group[i : i + cap] for group in groups for i in range(0, len(group), cap)]


class TextEncoder:
    """Tokenizer + ONNX text tower: ``embed(texts) -> (N, D)`` L2-normalised float32."""

    def __init__(self, tokenizer: BundleTokenizer, session: ort.InferenceSession, precision: str) -> None:
        self.tokenizer = tokenizer
        self.precision = precision
        self._session = session

    @classmethod
    def from_bundle(cls, bundle_dir: Bundle | Path | str, precision: str = "fp32", threads: int | None = None,
                    force_precision: bool = False) -> TextEncoder:
        """Open the bundle's text encoder; :class:`BundleError` with the command to run when it has none.

        A reduced precision must have passed its gate against fp32 (``force_precision`` skips that).
        """
        if precision not in TEXT_PRECISIONS:
            raise BundleError(f"unknown text encoder precision '{precision}'",
                              f"choose one of: {', '.join(TEXT_PRECISIONS)}")
        bundle = bundle_dir if isinstance(bundle_dir, Bundle) else open_bundle(bundle_dir)
        entry = text_entry(bundle, precision)
        details = entry.details
        verdict = details.get(PARITY_KEY)
        if precision != "fp32" and not force_precision and not (isinstance(verdict, dict) and verdict.get("passed")):
            raise BundleError(f"the {precision} text encoder of {bundle.root} has not passed its gate against fp32",
                              f"re-run {add_command(bundle, precision)}, or pass --force-precision")
        tokenizer = BundleTokenizer(bundle.path(bundle.manifest.tokenizer), int(details[MAX_TOKENS_KEY]),
                                    int(details[PAD_ID_KEY]), str(details[PAD_TOKEN_KEY]))
        _check_matches(bundle, entry, tokenizer)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if precision == "int8":  # dynamic INT8: u8 activations × s8 weights, as the audio encoder's
            keep_int8_exact(options)
        try:
            session = ort.InferenceSession(str(bundle.path(entry.path)), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises untyped errors for corrupt or unsupported graphs
            raise BackendError(f"ONNX Runtime cannot load {entry.path}: {str(e).splitlines()[0]}",
                               add_hint(bundle, precision)) from e
        log.debug("text encoder %s loaded from %s", precision, bundle.root)
        return cls(tokenizer, session, precision)

    def embed(self, texts: list[str]) -> np.ndarray:
        """``N`` texts -> ``(N, D)`` float32, L2-normalised, as ``get_text_features`` + normalise."""
        if not texts:
            raise ValueError("embed() needs at least one text")
        ids = self.tokenizer.ids(texts)
        rows: np.ndarray | None = None
        for chunk in length_batches([len(row) for row in ids]):
            batch = np.array([ids[i] for i in chunk], dtype=np.int64)
            out = self._session.run([OUTPUT_NAME], {INPUT_IDS: batch, ATTENTION_MASK: np.ones_like(batch)})[0]
            if rows is None:
                rows = np.empty((len(texts), out.shape[1]), dtype=np.float32)
            rows[chunk] = out
        assert rows is not None
        return rows

    def token_counts(self, texts: list[str]) -> list[int]:
        """Untruncated token count of each text (special tokens included)."""
        return self.tokenizer.token_counts(texts)
