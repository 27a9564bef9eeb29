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


def test_a_clip_is_cut_as_views_of_the_held_chunks_and_written_piece_by_piece(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edge.card.guano import read_guano, write_flac_with_guano, write_wav_with_guano

    buffer = ClipBuffer(RATE, keep_min_samples=30 * RATE)
    rng = np.random.default_rng(2)
    for s in range(10):
        buffer.push(AudioChunk((0.3 * rng.standard_normal(RATE)).astype(np.float32), RATE, s * RATE), needed_from=0)
    clip = buffer.cut(RATE // 2, 7 * RATE + 100)
    assert clip is not None and clip.start_sample == RATE // 2 and clip.samples == 6 * RATE + RATE // 2 + 100
    held = [samples for _, samples in buffer._chunks]
    assert all(any(np.shares_memory(piece, chunk) for chunk in held) for piece in clip.pieces), "no copy"
    for write, suffix in ((write_flac_with_guano, "flac"), (write_wav_with_guano, "wav")):
        path = tmp_path / f"clip.{suffix}"
        with open(path, "w+b") as handle:
            write(handle, clip.pieces, RATE, {"Species Auto ID": "toad"})
        audio, _ = sf.read(path, dtype="int16")
        assert np.array_equal(audio, clip.audio) and read_guano(path)["Species Auto ID"] == "toad"
        whole = (flac_with_guano if suffix == "flac" else wav_with_guano)(clip.audio, RATE, {"Species Auto ID": "toad"})
        assert path.read_bytes() == whole, "the same file as encoding the whole clip at once"


def test_a_full_card_while_encoding_a_clip_is_its_os_error() -> None:
    import errno

    from edge.card.guano import write_flac_with_guano

    class FullCard(io.BytesIO):
        def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
            if self.tell() > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    with pytest.raises(OSError) as raised:
        write_flac_with_guano(FullCard(), [np.zeros(10 * RATE, np.int16) + 7], RATE, {})
    assert raised.value.errno == errno.ENOSPC


def test_a_clip_is_never_longer_than_its_cap_even_below_the_windows_kept_for_confirmation() -> None:
    buffer = ClipBuffer(RATE, keep_min_samples=30 * RATE, max_clip_s=10.0)
    for s in range(40):
        buffer.push(AudioChunk(np.full(RATE, s / 100, np.float32), RATE, s * RATE), needed_from=0)
    clip = buffer.cut(0, 40 * RATE)
    assert clip is not None and (clip.start_sample, clip.samples, clip.cut_samples) == (30 * RATE, 10 * RATE, 30 * RATE)
    assert buffer.cut(25 * RATE, 33 * RATE).samples == 8 * RATE  # type: ignore[union-attr]  # a short one is whole
