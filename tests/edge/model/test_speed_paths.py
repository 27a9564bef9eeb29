"""The speed-ups change no answers: streaming log-mel, the Resize->MatMul rewrite, the optimised graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.audio.chunk import AudioChunk
from edge.audio.windowing import Window, Windower
from edge.cli import app as edge_app
from edge.model.backends.ort import OrtBackend
from edge.model.bundle import ORT_OPTIMIZED_KEY, open_bundle
from edge.model.frontend import LogMelFrontend
from edge.model.frontend_stream import StreamingLogMel
from tests.conftest import MAGPIE, TOAD, load_48k

MAX_DB_ERROR = 0.01
PARITY_MAX_ABS = 1e-4
STRETCH_MAX_ABS = 1e-6
RATE = 48_000


def windows_of(samples: np.ndarray, window: int, hop: int, chunk: int) -> list[Window]:
    windower = Windower(window, hop)
    out: list[Window] = []
    for start in range(0, samples.shape[0], chunk):
        out.extend(windower.push(AudioChunk(samples[start : start + chunk], RATE, start)))
    return out + windower.flush()


@pytest.fixture(scope="module")
def params(tiny_bundle: Path):
    return open_bundle(tiny_bundle).manifest.frontend


@pytest.mark.parametrize(("hop_s", "reuses"), [(5.0, True), (2.5, True), (9.99, False), (3.3331, False)])
def test_streaming_log_mel_equals_per_window_frontend(hop_s: float, reuses: bool, params, shared_audio: Path) -> None:
    audio = load_48k(shared_audio / TOAD)
    windows = windows_of(audio, params.window_samples, round(hop_s * RATE), chunk=37_123)
    streaming = StreamingLogMel(params)
    ours = streaming.batch(windows)
    reference = LogMelFrontend(params).batch([w.samples for w in windows])
    assert np.abs(ours - reference).max() <= MAX_DB_ERROR
    full = len(windows) * params.n_frames
    if reuses:  # on the frame grid with shared interior frames: those are reused, not recomputed
        assert streaming.frames_computed < 0.7 * full
    else:  # off the grid (3.3331 s) or no shared interior frames (9.99 s): every frame computed afresh
        assert streaming.frames_computed == full


def test_streaming_log_mel_recovers_after_reset_gaps_and_short_streams(params, shared_audio: Path) -> None:
    frontend = LogMelFrontend(params)
    streaming = StreamingLogMel(params)
    toad, magpie = load_48k(shared_audio / TOAD), load_48k(shared_audio / MAGPIE)
    hop = 240_000
    first = windows_of(toad, params.window_samples, hop, chunk=100_000)
    streaming.batch(first)
    # a new stream whose sample indices start again at 0 (no reset called) must not reuse the old frames
    second = windows_of(magpie, params.window_samples, hop, chunk=100_000)
    assert np.abs(streaming.batch(second) - frontend.batch([w.samples for w in second])).max() <= MAX_DB_ERROR
    streaming.reset()
    short = windows_of(magpie[: 3 * RATE], params.window_samples, hop, chunk=50_000)
    assert len(short) == 1 and short[0].samples.shape[0] < params.window_samples
    assert np.abs(streaming.batch(short) - frontend.batch([short[0].samples])).max() <= MAX_DB_ERROR


def test_bicubic_matmul_equals_torch_interpolate() -> None:
    torch = pytest.importorskip("torch")

    from export.optimize import bicubic_matrix

    x = np.random.default_rng(1).standard_normal((3, 1, 1001, 64)).astype(np.float32)
    with torch.no_grad():
        reference = torch.nn.functional.interpolate(torch.from_numpy(x), (1024, 64), mode="bicubic",
                                                    align_corners=True).numpy()
    assert np.abs(bicubic_matrix(1001, 1024) @ x - reference).max() <= STRETCH_MAX_ABS


def test_exported_graph_has_the_bicubic_stretch_as_a_matmul(tiny_bundle: Path) -> None:
    """The export replaces HTS-AT's bicubic Resize (TensorRT parses only nearest/linear) by the exact matrix."""
    import onnx
    from onnx import numpy_helper

    from export.optimize import bicubic_matrix

    graph = onnx.load(str(tiny_bundle / "audio_encoder.fp32.onnx")).graph
    assert not [n for n in graph.node if n.op_type == "Resize"]
    matrices = [numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_bicubic_matrix")]
    assert len(matrices) == 1
    np.testing.assert_array_equal(matrices[0], bicubic_matrix(1001, 1024))


def test_optimised_graph_in_bundle_matches_torch(tiny_bundle: Path, tiny_checkpoint: Path, shared_audio: Path) -> None:
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import torch_embeddings
    from export.parity import real_windows

    bundle = open_bundle(tiny_bundle)
    extra = bundle.manifest.models["fp32"].details[ORT_OPTIMIZED_KEY]
    assert extra["path"] in bundle.manifest.files  # checksummed like every other bundle file
    assert extra["standard_ops_only"] is False
    features = real_windows(shared_audio, LogMelFrontend(bundle.manifest.frontend), 5)
    optimized = OrtBackend(bundle, "fp32")
    assert optimized.model_file == extra["path"]
    reference = torch_embeddings(load_checkpoint(str(tiny_checkpoint)), features)
    assert np.abs(optimized.embed(features) - reference).max() <= PARITY_MAX_ABS
    assert np.abs(optimized.embed(features[:1]) - reference[:1]).max() <= PARITY_MAX_ABS
    report = json.loads((tiny_bundle / "parity.json").read_text())
    assert report["stages"]["torch_fp32->ort_fp32_optimized"]["passed"] is True


def test_bench_reports_every_precision_and_batch_as_json(tiny_bundle: Path) -> None:
    result = CliRunner().invoke(edge_app, ["bench", "--bundle", str(tiny_bundle), "--batch", "1,2", "--windows",
                                           "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["precision"] for r in report["results"]] == list(open_bundle(tiny_bundle).manifest.models)
    first = report["results"][0]
    assert [b["batch"] for b in first["batches"]] == [1, 2]
    assert first["peak_rss_mib"] > 0 and first["time_to_first_window_s"] > 0
    assert all(b["real_time_factor"] > 0 and b["p99_ms"] >= b["p50_ms"] for b in first["batches"])


def test_bench_rejects_a_bad_batch_list_in_one_line(tiny_bundle: Path) -> None:
    result = CliRunner().invoke(edge_app, ["bench", "--bundle", str(tiny_bundle), "--batch", "1,x"])
    assert result.exit_code == 2
    assert "--batch" in result.output and "Traceback" not in result.output


def test_pool_threads_block_instead_of_spinning_with_the_same_answers(tiny_bundle: Path) -> None:
    """ORT's intra-op pool is told not to spin between kernels (it took 2x the CPU beside other work), and a
    2-thread session gives the 1-thread session's embeddings."""
    bundle = open_bundle(tiny_bundle)
    params = bundle.manifest.frontend
    features = np.random.default_rng(0).normal(-40, 20, (2, 1, params.n_frames, params.n_mels)).astype(np.float32)
    two = OrtBackend(bundle, threads=2)
    options = two._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2
    np.testing.assert_allclose(two.embed(features), OrtBackend(bundle, threads=1).embed(features), atol=1e-5)
