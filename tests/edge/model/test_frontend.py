"""The numpy log-mel equals the checkpoint's ClapFeatureExtractor on real recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.model.bundle import open_bundle
from edge.model.frontend import LogMelFrontend, slaney_mel_filters
from tests.conftest import MAGPIE, TOAD, load_48k

MAX_DB_ERROR = 0.01
WINDOW = 480_000


@pytest.fixture(scope="module")
def reference_extractor(tiny_checkpoint: Path):
    from transformers import ClapProcessor

    return ClapProcessor.from_pretrained(str(tiny_checkpoint)).feature_extractor


@pytest.fixture(scope="module")
def frontend(tiny_bundle: Path) -> LogMelFrontend:
    return LogMelFrontend(open_bundle(tiny_bundle).manifest.frontend)


def reference_features(extractor, samples: np.ndarray) -> np.ndarray:
    return extractor(samples, sampling_rate=48_000, return_tensors="np")["input_features"][0, 0]


def test_mel_filters_match_transformers(frontend: LogMelFrontend, reference_extractor) -> None:
    np.testing.assert_allclose(slaney_mel_filters(frontend.params), reference_extractor.mel_filters_slaney,
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", [TOAD, MAGPIE])
def test_full_windows_within_a_hundredth_of_a_db(name: str, shared_audio: Path, frontend: LogMelFrontend,
                                                  reference_extractor) -> None:
    audio = load_48k(shared_audio / name)
    for start in (0, 48_000 * 7 + 123, audio.shape[0] - WINDOW):
        window = audio[start : start + WINDOW]
        ours = frontend(window)
        assert ours.shape == (1001, 64)
        assert np.abs(ours - reference_features(reference_extractor, window)).max() <= MAX_DB_ERROR


@pytest.mark.parametrize("seconds", [0.5, 2.48, 7.0])
def test_short_clips_repeat_pad_like_the_extractor(seconds: float, shared_audio: Path, frontend: LogMelFrontend,
                                                   reference_extractor) -> None:
    clip = load_48k(shared_audio / TOAD)[48_000 : 48_000 + int(seconds * 48_000)]
    assert np.abs(frontend(clip) - reference_features(reference_extractor, clip)).max() <= MAX_DB_ERROR


def test_digital_silence_hits_the_floor_not_nan(frontend: LogMelFrontend) -> None:
    features = frontend(np.zeros(WINDOW, dtype=np.float32))
    assert np.isfinite(features).all() and features.max() == pytest.approx(-100.0)


def test_embeddings_through_exported_model_match_reference_features(
    tiny_bundle: Path, shared_audio: Path, frontend: LogMelFrontend, reference_extractor
) -> None:
    from edge.model.backends.ort import OrtBackend

    backend = OrtBackend(open_bundle(tiny_bundle))
    audio = load_48k(shared_audio / MAGPIE)
    windows = [audio[s : s + WINDOW] for s in (0, 240_000, 960_000)]
    ours = backend.embed(frontend.batch(windows))
    ref = backend.embed(np.stack([reference_features(reference_extractor, w)[None] for w in windows]))
    cosine = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= 0.99999
