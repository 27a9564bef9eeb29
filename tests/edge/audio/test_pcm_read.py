"""16-bit PCM read as int16 and scaled in numpy: the same bits as libsndfile's float read, so `analyze` writes
the same detections and embeddings as before the faster read."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from edge.audio import files, seekable
from edge.audio.chunk import downmix
from edge.audio.files import find_audio_files, stream_file
from edge.audio.pcm import read_float32
from edge.audio.seekable import SeekableAudio
from edge.cli import app

RATE = 48_000


def libsndfile_float(handle: sf.SoundFile, frames: int) -> np.ndarray:
    """What every read was before: libsndfile's own float conversion."""
    return handle.read(frames, dtype="float32", always_2d=True)


def every_int16(path: Path, file_format: str) -> Path:
    """Two channels holding every 16-bit value once (one ascending, one descending)."""
    values = np.arange(-32768, 32768, dtype=np.int16)
    sf.write(path, np.stack([values, values[::-1]], axis=1), RATE, format=file_format, subtype="PCM_16")
    return path


@pytest.mark.parametrize("file_format", ["WAV", "FLAC", "AIFF", "RF64"])
def test_every_16_bit_value_reads_as_libsndfile_reads_it(tmp_path: Path, file_format: str) -> None:
    path = every_int16(tmp_path / f"all.{file_format.lower()}", file_format)
    with sf.SoundFile(path) as fast, sf.SoundFile(path) as slow:
        for block in (1000, 65536, 10):  # whole blocks, the file's end, and a read past it
            ours, theirs = read_float32(fast, block), libsndfile_float(slow, block)
            assert ours.dtype == np.float32 and ours.shape == theirs.shape
            assert ours.tobytes() == theirs.tobytes()


def test_other_encodings_keep_libsndfile_float(tmp_path: Path) -> None:
    path = tmp_path / "deep.wav"
    sf.write(path, np.linspace(-1, 1, 4801) * (1 - 2**-23), RATE, subtype="PCM_24")
    with sf.SoundFile(path) as fast, sf.SoundFile(path) as slow:
        assert read_float32(fast, 5000).tobytes() == libsndfile_float(slow, 5000).tobytes()


def test_mono_downmix_is_the_channel_itself() -> None:
    frames = np.array([[-0.0], [1e-45], [0.5], [-1.0]], dtype=np.float32)
    assert downmix(frames).tobytes() == frames.mean(axis=1, dtype=np.float32).tobytes()
    stereo = np.array([[0.25, 0.5], [1.0, -1.0]], dtype=np.float32)
    assert downmix(stereo).tolist() == [0.375, 0.0]


def test_recordings_stream_and_seek_to_the_same_samples_as_before(shared_audio: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every real 16-bit recording (mono and stereo, 16-500 kHz, resampled or not) gives the same 48 kHz samples."""
    recordings = [p for p in find_audio_files([shared_audio]) if sf.info(str(p)).subtype == "PCM_16"]
    assert len(recordings) >= 10

    def read_all() -> list[bytes]:
        out = []
        for path in recordings:
            out.append(np.concatenate([c.samples for c in stream_file(path, RATE, warn_truncated=False)]).tobytes())
            with SeekableAudio(path, RATE) as audio:
                out.append(audio.read(audio.total // 3, audio.total).tobytes())
        return out

    ours = read_all()
    monkeypatch.setattr(files, "read_float32", libsndfile_float)
    monkeypatch.setattr(seekable, "read_float32", libsndfile_float)
    assert read_all() == ours


def test_analyze_writes_the_same_files_as_with_libsndfile_float(example_bundle: Path,
                                                                example_labels: tuple[Path, Path],
                                                                shared_audio: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Detections, every table and the embedding archive are byte-identical with the int16 read and without it."""
    card = tmp_path / "card"
    card.mkdir()
    for name in ("kitzeslab__opensoundscape/1min.wav", "kitzeslab__opensoundscape/rugr_drum.wav",
                 "macaodha__batdetect2/Audiomoth.WAV", "scikit-maad__scikit-maad/XC663885.wav"):
        if (shared_audio / name).is_file():
            (card / Path(name).name).symlink_to(shared_audio / name)
    assert len(list(card.iterdir())) >= 3

    def analyze(out: Path) -> None:
        result = CliRunner().invoke(app, [
            "analyze", str(card), "--labels", str(example_labels[0]), "--bundle", str(example_bundle), "--out",
            str(out), "--workers", "1", "--piece-seconds", "20", "--embeddings", str(out / "emb"),
            "--format", "csv,raven,audacity"])
        assert result.exit_code == 0, result.output

    analyze(tmp_path / "fast")
    monkeypatch.setattr(files, "read_float32", libsndfile_float)
    monkeypatch.setattr(seekable, "read_float32", libsndfile_float)
    analyze(tmp_path / "slow")
    written = sorted(p.relative_to(tmp_path / "fast") for p in (tmp_path / "fast").rglob("*") if p.is_file())
    compared = [p for p in written if p.name not in ("run.json", "analyze.worklog.jsonl")]  # times, out paths
    assert any(p.suffix == ".csv" for p in compared) and any("emb" in p.parts for p in compared)
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "fast", tmp_path / "slow", [str(p) for p in compared],
                                           shallow=False)
    assert (mismatch, errors) == ([], [])
