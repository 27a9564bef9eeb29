"""The clip buffer holds 16-bit PCM (half of float32's memory) and the clips written from it keep those samples."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from edge.audio.chunk import AudioChunk
from edge.card.guano import flac_with_guano, wav_with_guano
from edge.stream.clip_buffer import MAX_CLIP_S, ClipBuffer, to_pcm16

RATE = 48_000


def test_a_long_open_event_holds_two_bytes_a_sample() -> None:
    buffer = ClipBuffer(RATE, keep_min_samples=30 * RATE)
    rng = np.random.default_rng(0)
    second = (0.3 * rng.standard_normal(RATE)).astype(np.float32)
    tracemalloc.start()
    try:
        for s in range(int(MAX_CLIP_S) + 30):  # an event open since sample 0, longer than the cap
            buffer.push(AudioChunk(second.copy(), RATE, s * RATE), needed_from=0)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cap_bytes = MAX_CLIP_S * RATE * 2
    assert cap_bytes <= held < 1.1 * cap_bytes  # float32 would hold twice as much
    clip = buffer.cut(0, (int(MAX_CLIP_S) + 30) * RATE)
    assert clip is not None and clip.audio.dtype == np.int16 and clip.cut_samples == 30 * RATE
    assert np.array_equal(clip.audio[:RATE], to_pcm16(second))


def test_to_pcm16_clips_and_rounds_to_the_nearest_step() -> None:
    samples = np.array([-2.0, -1.0, -0.5, 0.0, 0.25 / 32768, 0.75 / 32768, 0.5, 1.0, 3.0], np.float32)
    assert to_pcm16(samples).tolist() == [-32768, -32768, -16384, 0, 0, 1, 16384, 32767, 32767]


@pytest.mark.parametrize("encode", [flac_with_guano, wav_with_guano], ids=["flac", "wav"])
def test_clip_files_keep_the_buffers_samples_within_one_step_of_libsndfiles_float_conversion(encode) -> None:  # type: ignore[no-untyped-def]
    audio = np.clip(0.3 * np.random.default_rng(1).standard_normal(5 * RATE), -1.2, 1.2).astype(np.float32)
    from_buffer, _ = sf.read(io.BytesIO(encode(to_pcm16(audio), RATE, {})), dtype="int16")
    assert np.array_equal(from_buffer, to_pcm16(audio))
    old, _ = sf.read(io.BytesIO(encode(audio, RATE, {})), dtype="int16")  # float given: converted the same way
    assert np.array_equal(old, from_buffer)
    fmt = "FLAC" if encode is flac_with_guano else "WAV"
    libsndfile = io.BytesIO()  # what libsndfile's own float conversion made of it before
    sf.write(libsndfile, np.clip(audio, -1.0, 1.0), RATE, subtype="PCM_16", format=fmt)
    libsndfile.seek(0)
    assert np.abs(sf.read(libsndfile, dtype="int16")[0].astype(int) - from_buffer).max() <= 1
