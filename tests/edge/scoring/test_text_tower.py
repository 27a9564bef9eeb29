"""The text tower without torch: ONNX + tokenizer.json export, parity with transformers/torch, `labels add`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edge.cli import app as edge_app
from edge.errors import BundleError, LabelError
from edge.model.bundle import open_bundle, write_manifest
from edge.scoring.labels import read_labels
from edge.scoring.scorer import load_label_set
from edge.scoring.text_encoder import EMBED_BATCH, PARITY_KEY, TextEncoder, length_batches
from edge.scoring.text_tokenizer import BundleTokenizer
from export.checkpoint import load_checkpoint
from export.labels import TorchTextEmbedder
from export.text_corpus import LONG_NAME, parity_texts
from export.text_onnx import PARITY_STAGE, save_tokenizer, tokenizer_mismatches
from tests.conftest import REPO
from tests.edge.batch.test_analyze_cli import BLOCK_TORCH

runner = CliRunner()
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path):  # type: ignore[no-untyped-def]
    return load_checkpoint(str(tiny_checkpoint))


@pytest.fixture
def text_copy(text_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(text_bundle, tmp_path / "bundle"))


def test_manifest_lists_text_encoder_tokenizer_and_parity(text_bundle: Path) -> None:
    manifest = open_bundle(text_bundle).manifest
    entry = manifest.text_encoders["fp32"]
    assert manifest.tokenizer == "tokenizer.json"
    assert {entry.path, "tokenizer.json"} <= set(manifest.files)
    assert [(t.name, t.shape, t.dtype) for t in entry.inputs] == [
        ("input_ids", ("batch", "sequence"), "int64"), ("attention_mask", ("batch", "sequence"), "int64")]
    assert entry.outputs[0].shape == ("batch", 32)
    parity = entry.details[PARITY_KEY]
    assert parity["passed"] and parity["max_abs"] <= TOLERANCE and parity["texts"] == len(parity_texts())
    report = json.loads((text_bundle / "parity.json").read_text())["stages"][PARITY_STAGE]
    assert report["passed"] and report["max_abs"] == parity["max_abs"]
    graph = onnx.load(str(text_bundle / entry.path)).graph
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert all(isinstance(d, str) for row in dims for d in row), dims


def test_embed_equals_get_text_features(text_bundle: Path, checkpoint) -> None:  # type: ignore[no-untyped-def]
    encoder = TextEncoder.from_bundle(text_bundle)
    texts = list(parity_texts())
    many = [f"{t} {i}" for i, t in enumerate(texts * 3)][: EMBED_BATCH + 7]  # more than one ORT batch, any order
    for batch in (texts[:1], texts, many):
        ours = encoder.embed(batch)
        reference = TorchTextEmbedder(checkpoint).embed(batch)
        assert ours.shape == (len(batch), 32) and ours.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        assert np.abs(ours - reference).max() <= TOLERANCE


def test_length_batches_group_equal_token_counts_in_runs_of_at_most_the_cap() -> None:
    counts = [5, 3, 5, 3, 3, 7, 5, 3]
    batches = length_batches(counts, cap=2)
    assert [list(b) for b in batches] == [[1, 3], [4, 7], [0, 2], [6], [5]]
    assert sorted(i for b in batches for i in b) == list(range(len(counts)))


def test_embed_never_pads_and_equals_one_text_at_a_time(text_bundle: Path) -> None:
    """Each ONNX call holds texts of one token count: the tower computes exactly the texts' tokens."""
    encoder = TextEncoder.from_bundle(text_bundle)
    texts = [f"{t} {i}" for i, t in enumerate(list(parity_texts()) * 6)][: 2 * EMBED_BATCH + 5]
    texts += ["frog"] * (EMBED_BATCH + 1)  # one token count with more texts than a batch holds
    feeds: list[dict[str, np.ndarray]] = []
    session = encoder._session

    class Spy:
        def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            feeds.append(feed)
            return session.run(names, feed)

    encoder._session = Spy()  # type: ignore[assignment]
    together = encoder.embed(texts)
    encoder._session = session
    assert all(f["attention_mask"].all() and len(f["input_ids"]) <= EMBED_BATCH for f in feeds)
    assert sum(f["input_ids"].size for f in feeds) == sum(min(n, 77) for n in encoder.token_counts(texts))
    alone = np.concatenate([encoder.embed([t]) for t in texts])
    assert np.abs(together - alone).max() <= 1e-6


def test_tokenizer_ids_equal_transformers_including_truncation(text_bundle: Path, checkpoint) -> None:  # type: ignore[no-untyped-def]
    tokenizer = TextEncoder.from_bundle(text_bundle).tokenizer
    texts = list(parity_texts())
    assert tokenizer_mismatches(checkpoint.processor.tokenizer, tokenizer, texts) == []
    for text in texts:  # alone, so each is padded/truncated on its own
        assert tokenizer_mismatches(checkpoint.processor.tokenizer, tokenizer, [text]) == [], text
    long = tokenizer.encode([LONG_NAME, "a"])
    assert long.input_ids.shape[1] == 77 and long.attention_mask[0].sum() == 77
    eos = checkpoint.processor.tokenizer.eos_token_id
    assert long.input_ids[0, -1] == eos and tokenizer.token_counts([LONG_NAME])[0] > 77


def test_tokenizer_parity_for_a_roberta_vocab_and_merges_tokenizer(tmp_path: Path) -> None:
    """A hub RoBERTa checkpoint ships vocab.json + merges.txt; transformers builds its pipeline from them."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    from export.synthetic import SPECIAL_TOKENS, TOKENIZER_CORPUS

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(TOKENIZER_CORPUS) + list(parity_texts()), vocab_size=600, min_frequency=1,
                            special_tokens=SPECIAL_TOKENS)
    bpe.save_model(str(tmp_path))
    roberta = RobertaTokenizer(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))
    save_tokenizer(roberta, tmp_path / "tokenizer.json")
    ours = BundleTokenizer(tmp_path / "tokenizer.json", 77, int(roberta.pad_token_id), str(roberta.pad_token))
    texts = list(parity_texts())
    assert tokenizer_mismatches(roberta, ours, texts) == []
    assert [tokenizer_mismatches(roberta, ours, [t]) for t in texts] == [[]] * len(texts)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_text_empty_after_strip_is_rejected(text_bundle: Path, text: str) -> None:
    with pytest.raises(LabelError, match="text 2 of 2 is empty"):
        TextEncoder.from_bundle(text_bundle).embed(["frog chorus at night", text])


def _labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text(f"Great Plains Toad; Anaxyrus cognatus\nPérez's frog; Pelophylax perezi\nкириллица\n"
                    f"日本語\n{LONG_NAME}\n", encoding="utf-8")
    return path


def test_labels_add_without_torch_equals_biolingual_export_labels(text_bundle: Path, tiny_checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    labels = _labels_file(tmp_path)
    templates = ["--template", "{common}", "--template", "the call of {scientific}"]
    torch_route = Path(shutil.copytree(text_bundle, tmp_path / "torch"))
    edge_route = Path(shutil.copytree(text_bundle, tmp_path / "edge"))
    from export.cli import app as export_app

    done = runner.invoke(export_app, ["labels", "--labels", str(labels), "--bundle", str(torch_route), "--model",
                                      str(tiny_checkpoint), *templates])
    assert done.exit_code == 0, done.output
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "labels", "add", "--bundle", str(edge_route), "--labels", str(labels),
         *templates], capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300)
    assert result.returncode == 0, result.stderr
    assert "5 label(s) stored" in result.stderr
    assert "truncated to 77" in result.stderr and LONG_NAME[:40] in result.stderr
    key = read_labels(labels).key
    a, b = (open_bundle(r).manifest.label_sets[key] for r in (torch_route, edge_route))
    assert a == b and a.path == f"labels/{key}.npz" and a.templates == ("{common}", "the call of {scientific}")
    with np.load(torch_route / a.path) as ta, np.load(edge_route / b.path) as eb:
        assert list(ta["names"]) == list(eb["names"])
        assert np.abs(ta["embeddings"] - eb["embeddings"]).max() <= TOLERANCE
    scored = load_label_set(open_bundle(edge_route), read_labels(labels))
    assert scored.names[0] == "Great Plains Toad" and scored.embeddings.shape == (5, 32)


def test_labels_add_without_text_encoder_names_the_command(tiny_bundle: Path, tmp_path: Path) -> None:
    result = runner.invoke(edge_app, ["labels", "add", "--bundle", str(tiny_bundle), "--labels",
                                      str(_labels_file(tmp_path))])
    assert result.exit_code == 2
    assert "has no fp32 text encoder" in result.output
    assert "biolingual-export text-onnx --model MODEL --bundle" in result.output
    assert "Traceback" not in result.output and not (tiny_bundle / "labels").exists()


def test_text_encoder_without_tokenizer_is_refused(text_copy: Path) -> None:
    bundle = open_bundle(text_copy)
    write_manifest(text_copy, dataclasses.replace(bundle.manifest, tokenizer=""))
    with pytest.raises(BundleError, match="no tokenizer.json") as error:
        TextEncoder.from_bundle(text_copy)
    assert "biolingual-export text-onnx" in error.value.hint


@pytest.mark.parametrize("extra_tokens", [0, 1000])
def test_tokenizer_not_matching_the_encoder_vocabulary_is_refused(text_copy: Path, extra_tokens: int) -> None:
    """A tokenizer.json swapped for another one (more ids than the embedding table, or just different)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(text_copy / "tokenizer.json"))
    tokenizer.add_tokens([f"swapped{i}" for i in range(extra_tokens)] or ["swapped"])
    tokenizer.save(str(text_copy / "tokenizer.json"))
    write_manifest(text_copy, open_bundle(text_copy, verify=False).manifest)  # checksums made to match
    with pytest.raises(BundleError, match="does not match the vocabulary of text_encoder.fp32.onnx"):
        TextEncoder.from_bundle(text_copy)


def test_text_encoder_of_another_checkpoint_is_refused(text_copy: Path) -> None:
    manifest = open_bundle(text_copy).manifest
    entry = manifest.text_encoders["fp32"]
    foreign = dataclasses.replace(entry, details={**entry.details, "model_revision": "sha256:0123456789abcdef"})
    write_manifest(text_copy, dataclasses.replace(manifest, text_encoders={"fp32": foreign}))
    with pytest.raises(BundleError, match="is from checkpoint sha256:0123456789abcdef"):
        TextEncoder.from_bundle(text_copy)


def test_label_set_of_another_checkpoint_is_refused(text_copy: Path, tmp_path: Path) -> None:
    labels = _labels_file(tmp_path)
    added = runner.invoke(edge_app, ["labels", "add", "--bundle", str(text_copy), "--labels", str(labels)])
    assert added.exit_code == 0, added.output
    manifest = open_bundle(text_copy).manifest
    key = read_labels(labels).key
    assert manifest.label_sets[key].model_revision == manifest.model_revision
    copied = dataclasses.replace(manifest.label_sets[key], model_revision="sha256:fedcba9876543210")
    write_manifest(text_copy, dataclasses.replace(manifest, label_sets={key: copied}))
    with pytest.raises(LabelError, match="computed by checkpoint sha256:fedcba9876543210") as error:
        load_label_set(open_bundle(text_copy), read_labels(labels))
    assert "labels add" in error.value.hint


def test_int8_text_encoder_gated_on_label_rankings(text_copy: Path, shared_audio: Path,
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The random tiny tower's real agreement is whatever it is; the gate is moved to each side of it."""
    import export.text_int8 as text_int8
    from export.errors import ExportError

    before = open_bundle(text_copy).manifest
    monkeypatch.setattr(text_int8, "MIN_TOP5", 1.01)
    with pytest.raises(ExportError, match=r"ranks labels differently from fp32: .* top-5 .* \(gate 1.01\)"):
        text_int8.add_text_int8(text_copy, shared_audio)
    after = open_bundle(text_copy).manifest  # every checksum still matches
    assert after.text_encoders == before.text_encoders and not (text_copy / "text_encoder.int8.onnx").exists()
    stage = json.loads((text_copy / "parity.json").read_text())["stages"][text_int8.PARITY_STAGE]
    assert stage["passed"] is False and stage["gates"]["min_top5"] == 1.01

    monkeypatch.setattr(text_int8, "MIN_TOP5", 0.0)
    monkeypatch.setattr(text_int8, "MIN_TOP1", 0.0)
    manifest = text_int8.add_text_int8(text_copy, shared_audio)
    entry = manifest.text_encoders["int8"]
    gate = entry.details[PARITY_KEY]
    assert gate["passed"] and gate["windows"] == text_int8.GATE_WINDOWS and gate["labels"] >= len(parity_texts())
    assert 0 < gate["top1_agreement"] <= 1 and 0 < gate["top5_overlap"] <= 1
    fp32_size = (text_copy / manifest.text_encoders["fp32"].path).stat().st_size
    assert (text_copy / entry.path).stat().st_size < fp32_size
    texts = list(parity_texts())
    int8 = TextEncoder.from_bundle(text_copy, "int8").embed(texts)
    fp32 = TextEncoder.from_bundle(text_copy, "fp32").embed(texts)
    assert 0 < np.abs(int8 - fp32).max() < 0.1
    added = runner.invoke(edge_app, ["labels", "add", "--bundle", str(text_copy), "--labels",
                                     str(_labels_file(tmp_path)), "--precision", "int8"])
    assert added.exit_code == 0 and "(int8 text encoder)" in added.output, added.output


def test_labels_add_without_the_tokenizers_package_names_the_extra(text_bundle: Path, tmp_path: Path) -> None:
    script = BLOCK_TORCH.replace("('torch', ", "('torch', 'tokenizers', ")
    assert script != BLOCK_TORCH
    result = subprocess.run(
        [sys.executable, "-c", script, "labels", "add", "--bundle", str(text_bundle), "--labels",
         str(_labels_file(tmp_path))], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "`tokenizers` package is not installed" in result.stderr
    assert "pip install 'biolingual-edge[text]'" in result.stderr and "Traceback" not in result.stderr


def test_int8_text_encoder_without_a_passed_gate_is_refused(text_copy: Path, tmp_path: Path) -> None:
    from export.text_int8 import quantize_text_dynamic
    from export.text_onnx import TEXT_FILES, register_text_encoder

    bundle = open_bundle(text_copy)
    quantize_text_dynamic(text_copy / TEXT_FILES["fp32"], text_copy / TEXT_FILES["int8"])
    unchecked = dataclasses.replace(bundle.manifest.text_encoders["fp32"], path=TEXT_FILES["int8"],
                                    precision="int8", details={**bundle.manifest.text_encoders["fp32"].details,
                                                               PARITY_KEY: {"passed": False}})
    register_text_encoder(bundle, "int8", unchecked)
    args = ["labels", "add", "--bundle", str(text_copy), "--labels", str(_labels_file(tmp_path)), "--precision", "int8"]
    refused = runner.invoke(edge_app, args)
    assert refused.exit_code == 2 and "has not passed its gate against fp32" in refused.output
    assert "--force-precision" in refused.output
    forced = runner.invoke(edge_app, [*args, "--force-precision"])
    assert forced.exit_code == 0, forced.output
