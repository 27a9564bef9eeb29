"""``biolingual-export text-onnx``: the text tower (RoBERTa + projection) and its tokenizer into the bundle.

``input_ids, attention_mask (B, S) int64 -> text_embeds (B, D)`` L2-normalised, batch and sequence
length (<= 77) dynamic; the tokenizer as one ``tokenizer.json`` for the ``tokenizers`` library. Both are
checked before they are registered: tokenizer ids equal to transformers', embeddings within 1e-4 of torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge.model.bundle import Bundle, Manifest, ModelEntry, TensorSpec, open_bundle, sha256_file, write_manifest
from edge.scoring.label_sets import MAX_TOKENS
from edge.scoring.text_encoder import (
    ATTENTION_MASK,
    INPUT_IDS,
    MAX_TOKENS_KEY,
    MODEL_REVISION_KEY,
    OUTPUT_NAME,
    PAD_ID_KEY,
    PAD_TOKEN_KEY,
    PARITY_KEY,
    TOKENIZER_SHA_KEY,
    VOCAB_SIZE_KEY,
    TextEncoder,
)
from edge.scoring.text_tokenizer import BundleTokenizer
from export.checkpoint import Checkpoint
from export.errors import ExportError
from export.labels import TorchTextEmbedder, check_same_model
from export.onnx_export import OPSET
from export.parity import FP32_MAX_ABS, agreement, write_report
from export.text_corpus import parity_texts

TOKENIZER_FILE = "tokenizer.json"
TEXT_FILES = {"fp32": "text_encoder.fp32.onnx", "int8": "text_encoder.int8.onnx"}
BATCH_AXIS = "batch"
SEQUENCE_AXIS = "sequence"
MAX_EXPORT_BATCH = 4096
TRACE_SHAPE = (3, 12)
"""Trace with several texts of a length that is neither 1 nor the maximum, so neither axis is specialised."""
PARITY_STAGE = "torch_text_fp32->ort_text_fp32"


def text_tower(model: Any) -> Any:
    """``nn.Module``: ClapModel's text encoder + projection + L2 normalisation (= ``get_text_features``)."""
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_model = model.text_model
            self.text_projection = model.text_projection

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            return torch.nn.functional.normalize(self.text_projection(pooled), dim=-1)

    return TextTower().eval()


def export_text_onnx(model: Any, pad_id: int, out_path: Path) -> tuple[TensorSpec, ...]:
    """Export with ``torch.onnx.export(dynamo=True)``, dynamic batch and sequence axes; returns the outputs."""
    import torch

    ids = torch.randint(pad_id + 1, int(model.config.text_config.vocab_size), TRACE_SHAPE)
    mask = torch.ones_like(ids)
    mask[1, TRACE_SHAPE[1] // 2 :] = 0
    ids[1, TRACE_SHAPE[1] // 2 :] = pad_id
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=MAX_EXPORT_BATCH)
    sequence = torch.export.Dim(SEQUENCE_AXIS, min=2, max=MAX_TOKENS)
    axes = {0: batch, 1: sequence}
    try:
        with torch.no_grad():
            torch.onnx.export(text_tower(model), (ids, mask), str(out_path), dynamo=True, opset_version=OPSET,
                              input_names=[INPUT_IDS, ATTENTION_MASK], output_names=[OUTPUT_NAME],
                              dynamic_shapes={INPUT_IDS: axes, ATTENTION_MASK: axes}, external_data=False,
                              verbose=False)
    except Exception as e:  # the exporter raises many internal types; the message is what matters
        raise ExportError(f"ONNX export of the text tower failed: {str(e).splitlines()[0]}",
                          "check the torch/onnxscript versions in pyproject.toml's export extra") from e
    return (TensorSpec(OUTPUT_NAME, (BATCH_AXIS, int(model.config.projection_dim)), "float32"),)


def save_tokenizer(tokenizer: Any, out_path: Path) -> None:
    """A transformers (fast) tokenizer as one ``tokenizer.json``, without call-time truncation or padding."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"the checkpoint's tokenizer ({type(tokenizer).__name__}) has no `tokenizers` backend",
                          "use a checkpoint with a fast tokenizer (tokenizer.json or vocab.json + merges.txt)")
    clean = Tokenizer.from_str(backend.to_str())
    clean.no_truncation()
    clean.no_padding()
    clean.save(str(out_path))


def tokenizer_mismatches(reference_tokenizer: Any, tokenizer: BundleTokenizer, texts: list[str]) -> list[str]:
    """Texts whose ids or mask from ``tokenizer`` differ from the transformers tokenizer's (as the labels use it)."""
    reference = reference_tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="np")
    ours = tokenizer.encode(texts)
    if ours.input_ids.shape != reference["input_ids"].shape:
        return list(texts)
    differs = (ours.input_ids != reference["input_ids"]) | (ours.attention_mask != reference["attention_mask"])
    rows = differs.any(axis=1)
    return [t for t, bad in zip(texts, rows) if bad]


def _text_entry(checkpoint: Checkpoint, bundle: Bundle, precision: str, outputs: tuple[TensorSpec, ...],
                details: dict[str, Any]) -> ModelEntry:
    tokenizer = checkpoint.processor.tokenizer
    inputs = tuple(TensorSpec(name, (BATCH_AXIS, SEQUENCE_AXIS), "int64") for name in (INPUT_IDS, ATTENTION_MASK))
    base = {MODEL_REVISION_KEY: checkpoint.revision, MAX_TOKENS_KEY: MAX_TOKENS,
            VOCAB_SIZE_KEY: int(checkpoint.model.text_model.embeddings.word_embeddings.num_embeddings),
            PAD_ID_KEY: int(tokenizer.pad_token_id), PAD_TOKEN_KEY: str(tokenizer.pad_token),
            TOKENIZER_SHA_KEY: sha256_file(bundle.root / TOKENIZER_FILE)}
    return ModelEntry(path=TEXT_FILES[precision], precision=precision, runtime="onnxruntime", inputs=inputs,
                      outputs=outputs, opset=OPSET, details={**base, **details})


def register_text_encoder(bundle: Bundle, key: str, entry: ModelEntry) -> Manifest:
    """Add (or replace) one text encoder and the tokenizer in the bundle's manifest.

    A new fp32 encoder replaces every other precision: they were derived from the old one.
    """
    kept = {} if key == "fp32" else bundle.manifest.text_encoders
    encoders = {**kept, key: entry}
    return write_manifest(bundle.root, dataclasses.replace(bundle.manifest, text_encoders=encoders,
                                                           tokenizer=TOKENIZER_FILE))


@contextmanager
def restored_on_failure(bundle: Bundle, names: list[str]) -> Iterator[None]:
    """On an exception inside, put back ``names`` of the bundle and its manifest as they were."""
    before = bundle.manifest
    backups = {bundle.root / n: bundle.root / (n + ".bak") for n in names if (bundle.root / n).exists()}
    for path, backup in backups.items():
        os.replace(path, backup)
    try:
        yield
    except BaseException:
        for name in names:
            (bundle.root / name).unlink(missing_ok=True)
        for path, backup in backups.items():
            os.replace(backup, path)
        write_manifest(bundle.root, before)
        raise
    for backup in backups.values():
        backup.unlink()


def export_text_fp32(checkpoint: Checkpoint, bundle_dir: Path) -> Manifest:
    """Tokenizer + fp32 text tower into the bundle, gated on tokenizer ids and torch parity (1e-4).

    On failure the bundle is left as it was.
    """
    bundle = open_bundle(bundle_dir)
    check_same_model(bundle, checkpoint)
    with restored_on_failure(bundle, [TOKENIZER_FILE, TEXT_FILES["fp32"]]):
        return _export_text_fp32(checkpoint, bundle)


def _export_text_fp32(checkpoint: Checkpoint, bundle: Bundle) -> Manifest:
    tokenizer = checkpoint.processor.tokenizer
    save_tokenizer(tokenizer, bundle.root / TOKENIZER_FILE)
    outputs = export_text_onnx(checkpoint.model, int(tokenizer.pad_token_id), bundle.root / TEXT_FILES["fp32"])
    manifest = register_text_encoder(bundle, "fp32", _text_entry(checkpoint, bundle, "fp32", outputs, {}))
    encoder = TextEncoder.from_bundle(Bundle(bundle.root, manifest))
    texts = list(parity_texts())
    mismatched = tokenizer_mismatches(tokenizer, encoder.tokenizer, texts)
    if mismatched:
        raise ExportError(f"the tokenizers pipeline gives other ids than transformers for {len(mismatched)} "
                          f"text(s), e.g. {mismatched[0]!r}", "report the transformers/tokenizers versions")
    result = agreement(TorchTextEmbedder(checkpoint).embed(texts), encoder.embed(texts))
    passed = result.max_abs <= FP32_MAX_ABS
    write_report(bundle.root, PARITY_STAGE, result, {"max_abs": FP32_MAX_ABS}, passed,
                 note=f"{len(texts)} label strings")
    if not passed:
        raise ExportError(f"the ONNX text tower disagrees with torch: max abs {result.max_abs:.2e} "
                          f"(gate {FP32_MAX_ABS:g})", "see parity.json; try another torch/onnxruntime version")
    parity = {**dataclasses.asdict(result), "texts": len(texts), "tokenizer_ids_equal": True, "passed": True}
    entry = dataclasses.replace(manifest.text_encoders["fp32"],
                                details={**manifest.text_encoders["fp32"].details, PARITY_KEY: parity})
    return register_text_encoder(Bundle(bundle.root, manifest), "fp32", entry)
