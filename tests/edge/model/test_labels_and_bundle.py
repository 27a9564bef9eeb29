"""Label files, bundle manifest and checksums, label embeddings in the bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edge.errors import BundleError, LabelError
from edge.model.backends.ort import OrtBackend
from edge.model.bundle import MANIFEST_NAME, open_bundle
from edge.scoring.labels import parse_labels, read_labels
from edge.scoring.scorer import load_label_set
from export.cli import app as export_app

runner = CliRunner()


def test_label_file_comments_blank_lines_and_scientific_names() -> None:
    labels = parse_labels("# frogs\n\nGreat Plains Toad; Anaxyrus cognatus  # trill\nAmerican Bullfrog\n")
    assert labels.names == ("Great Plains Toad", "American Bullfrog")
    assert labels.scientific_names == ("Anaxyrus cognatus", "")
    assert labels.key == parse_labels("Great Plains Toad;Anaxyrus cognatus\n# x\nAmerican Bullfrog").key


def test_duplicate_label_names_both_lines() -> None:
    with pytest.raises(LabelError, match=r"line 4: duplicate label 'great plains toad' \(first on line 2\)"):
        parse_labels("# list\nGreat Plains Toad\nBullfrog\ngreat plains toad\n")


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "   \n"])
def test_empty_label_list_is_an_error(text: str) -> None:
    with pytest.raises(LabelError, match="has no labels"):
        parse_labels(text)


def test_non_utf8_label_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes("Pic épeiche\n".encode("latin-1"))
    with pytest.raises(LabelError, match="not UTF-8"):
        read_labels(path)


def test_manifest_records_what_the_unit_needs(tiny_bundle: Path) -> None:
    manifest = open_bundle(tiny_bundle).manifest
    assert manifest.schema_version == 1
    assert manifest.frontend.window_samples == 480_000 and manifest.frontend.n_frames == 1001
    assert (manifest.frontend.f_min, manifest.frontend.f_max) == (50.0, 14_000.0)
    fp32 = manifest.models["fp32"]
    assert fp32.inputs[0].shape == ("batch", 1, 1001, 64) and fp32.outputs[0].shape == ("batch", 32)
    assert fp32.opset == 18
    assert manifest.model_revision.startswith("sha256:")
    assert manifest.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert set(manifest.files) == {"audio_encoder.fp32.onnx", "audio_encoder.fp32.opt.onnx", "parity.json"}
    assert {"torch", "transformers", "onnxruntime"} <= set(manifest.tool_versions)
    parity = json.loads((tiny_bundle / "parity.json").read_text())["stages"]["torch_fp32->ort_fp32"]
    assert parity["passed"] and parity["max_abs"] <= 1e-4 and parity["min_cosine"] >= 0.99999


def test_onnx_is_single_file_with_dynamic_batch(tiny_bundle: Path) -> None:
    model = onnx.load(str(tiny_bundle / "audio_encoder.fp32.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert list(tiny_bundle.glob("*.data")) == []
    backend = OrtBackend(open_bundle(tiny_bundle))
    rng = np.random.default_rng(0)
    features = rng.normal(-40, 15, size=(5, 1, 1001, 64)).astype(np.float32)
    batched = backend.embed(features)
    singles = np.concatenate([backend.embed(features[i : i + 1]) for i in range(5)])
    assert batched.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_corrupted_bundle_file_is_refused(bundle_copy: Path) -> None:
    with open(bundle_copy / "audio_encoder.fp32.onnx", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match="corrupted"):
        open_bundle(bundle_copy)


def test_wrong_schema_and_missing_bundle_are_refused(bundle_copy: Path, tmp_path: Path) -> None:
    raw = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    raw["schema_version"] = 99
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema version 99"):
        open_bundle(bundle_copy)
    with pytest.raises(BundleError, match="manifest.json is missing"):
        open_bundle(tmp_path / "nowhere")


def test_text_labels_with_prompt_ensembling(tiny_checkpoint: Path, bundle_copy: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("Great Plains Toad; Anaxyrus cognatus\nEurasian Magpie; Pica pica\n", encoding="utf-8")
    args = ["labels", "--model", str(tiny_checkpoint), "--labels", str(labels), "--bundle", str(bundle_copy)]
    one = runner.invoke(export_app, args)
    assert one.exit_code == 0, one.output
    bundle = open_bundle(bundle_copy)
    single = load_label_set(bundle, read_labels(labels)).embeddings
    two = runner.invoke(export_app, [*args, "--template", "{common}", "--template", "the call of {scientific}"])
    assert two.exit_code == 0, two.output
    bundle = open_bundle(bundle_copy)
    entry = bundle.manifest.label_sets[read_labels(labels).key]
    assert entry.templates == ("{common}", "the call of {scientific}") and entry.source == "text"
    ensembled = load_label_set(bundle, read_labels(labels)).embeddings
    np.testing.assert_allclose(np.linalg.norm(ensembled, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(single, ensembled)


def test_labels_from_another_model_are_refused(tiny_bundle: Path, bundle_copy: Path, tmp_path: Path) -> None:
    from export.synthetic import build_checkpoint

    other = build_checkpoint(tmp_path / "other", "tiny", seed=1)
    labels = tmp_path / "labels.txt"
    labels.write_text("Bullfrog\n", encoding="utf-8")
    result = runner.invoke(export_app, ["labels", "--model", str(other), "--labels", str(labels),
                                        "--bundle", str(bundle_copy)])
    assert result.exit_code != 0 and "bundle was exported from" in result.output


def test_missing_label_says_how_to_add_it(example_bundle: Path, tmp_path: Path) -> None:
    bundle = open_bundle(example_bundle)
    assert load_label_set(bundle, parse_labels("night\ntoad\n")).names == ("night", "toad")
    with pytest.raises(LabelError, match="'owl'") as info:
        load_label_set(bundle, parse_labels("toad\nowl\n"), "my.txt")
    model_id = bundle.manifest.model_id
    assert (f"biolingual-export labels --model {model_id} --labels {Path('my.txt').resolve()} "
            f"--bundle {example_bundle}") in info.value.hint


def test_same_checkpoint_from_another_folder_is_the_same_model(tiny_checkpoint: Path, bundle_copy: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moved = Path(shutil.copytree(tiny_checkpoint, tmp_path / "elsewhere" / "ckpt"))
    monkeypatch.chdir(tmp_path / "elsewhere")  # given as a relative path: a different string, the same weights
    labels = tmp_path / "labels.txt"
    labels.write_text("Bullfrog\n", encoding="utf-8")
    result = runner.invoke(export_app, ["labels", "--model", "ckpt", "--labels", str(labels),
                                        "--bundle", str(bundle_copy)])
    assert result.exit_code == 0, result.output
    assert open_bundle(bundle_copy).manifest.model_id == str(tiny_checkpoint) != str(moved)


def test_examples_without_a_label_file_name_labels_after_folders(bundle_copy: Path,
                                                                   example_labels: tuple[Path, Path]) -> None:
    result = runner.invoke(export_app, ["labels", "--bundle", str(bundle_copy), "--examples", str(example_labels[1])])
    assert result.exit_code == 0, result.output
    sets = open_bundle(bundle_copy).manifest.label_sets
    assert [(s.names, s.source) for s in sets.values()] == [(("night", "toad"), "examples")]


def test_fused_checkpoint_is_refused(tmp_path: Path, tiny_checkpoint: Path, shared_audio: Path) -> None:
    fused = Path(shutil.copytree(tiny_checkpoint, tmp_path / "fused"))
    config = json.loads((fused / "config.json").read_text())
    config["audio_config"]["enable_fusion"] = True
    (fused / "config.json").write_text(json.dumps(config))
    result = runner.invoke(export_app, ["onnx", "--model", str(fused), "--out", str(tmp_path / "b"),
                                        "--parity-audio", str(shared_audio)])
    assert result.exit_code != 0 and "fused CLAP checkpoint" in result.output


def test_wrong_preprocessor_settings_are_named(tmp_path: Path, tiny_checkpoint: Path, shared_audio: Path) -> None:
    broken = Path(shutil.copytree(tiny_checkpoint, tmp_path / "broken"))
    path = broken / "processor_config.json"
    config = json.loads(path.read_text())
    config["feature_extractor"]["truncation"] = "fusion"
    config["feature_extractor"]["hop_length"] = 320
    path.write_text(json.dumps(config))
    result = runner.invoke(export_app, ["onnx", "--model", str(broken), "--out", str(tmp_path / "b"),
                                        "--parity-audio", str(shared_audio)])
    assert result.exit_code != 0
    assert "truncation='fusion'" in result.output and "hop_length=320" in result.output


def test_onnx_cli_writes_a_whole_bundle_and_keeps_an_existing_one(tiny_checkpoint: Path, shared_audio: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "runs" / "bundle"
    args = ["onnx", "--model", str(tiny_checkpoint), "--out", str(out), "--parity-audio", str(shared_audio)]
    result = runner.invoke(export_app, args)
    assert result.exit_code == 0, result.output
    assert open_bundle(out).manifest.models["fp32"].path == "audio_encoder.fp32.onnx"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["bundle"]  # no staging folder left
    again = runner.invoke(export_app, args)
    assert again.exit_code == 2 and "already exists" in again.output and "--overwrite" in again.output
