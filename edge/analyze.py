"""``analyze``: recordings on disk -> detections.csv + Raven tables, one bad file never stopping the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge.audio.files import find_audio_files, stream_file, truncation_warning
from edge.audio.recording_time import recording_start_utc
from edge.bundle import open_bundle
from edge.errors import AudioError, ConfigError
from edge.labels import read_labels
from edge.pipeline import DEFAULT_BATCH, analyze_chunks, build_stages
from edge.run_record import run_record, write_run_record
from edge.scoring import SCORE_MODES
from edge.sinks.tables import RAVEN_SUFFIX, DetectionsCsv, remove_stale_tables, write_raven_table


@dataclass(frozen=True)
class AnalyzeOptions:
    """Analysis settings; durations in seconds, converted to samples at the model rate."""

    window_s: float = 10.0
    hop_s: float = 5.0
    threshold: float | None = None
    top_k: int = 1
    precision: str = "fp32"
    score_mode: str = "logit"
    threads: int | None = None
    batch: int = DEFAULT_BATCH
    force_precision: bool = False
    """Use a precision even if its parity report is missing or failed."""


@dataclass
class AnalyzeResult:
    """What an ``analyze`` run did."""

    csv_path: Path
    run_record: Path | None = None
    files_ok: int = 0
    detections: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Files analysed with a caveat (cut short), one line each naming the file."""


def _check_choices(options: AnalyzeOptions) -> None:
    """Options that need no bundle, checked before anything is opened."""
    if options.score_mode not in SCORE_MODES:
        raise ConfigError(f"unknown --score-mode '{options.score_mode}'", f"use {' or '.join(SCORE_MODES)}")
    if options.top_k < 1 or options.batch < 1:
        raise ConfigError("--top-k and --batch must be at least 1", "pass positive integers")


def _check_timing(options: AnalyzeOptions, max_window_s: float) -> None:
    if not 0 < options.window_s <= max_window_s:
        raise ConfigError(f"--window {options.window_s:g} s is outside 0..{max_window_s:g} s",
                          f"the model sees at most {max_window_s:g} s at once")
    if not 0 < options.hop_s <= options.window_s:
        raise ConfigError(f"--hop {options.hop_s:g} s must be > 0 and <= --window ({options.window_s:g} s)",
                          "use a hop no longer than the window so no audio is skipped")


def _unique_table_name(path: Path, used: set[str]) -> str:
    name = path.stem + RAVEN_SUFFIX
    counter = 2
    while name in used:
        name = f"{path.stem}_{counter}{RAVEN_SUFFIX}"
        counter += 1
    used.add(name)
    return name


def analyze_paths(paths: list[Path], labels_path: Path, bundle_dir: Path, out_dir: Path, options: AnalyzeOptions,
                  on_file: Callable[[int, int, str], None] | None = None) -> AnalyzeResult:
    """Analyse every recording under ``paths``; unreadable files are reported in ``failures``."""
    _check_choices(options)
    bundle = open_bundle(bundle_dir)
    frontend_params = bundle.manifest.frontend
    _check_timing(options, frontend_params.max_length_s)
    labels = read_labels(labels_path)
    stages = build_stages(bundle, labels, str(labels_path), precision=options.precision,
                          threads=options.threads, score_mode=options.score_mode, top_k=options.top_k,
                          threshold=options.threshold, force_precision=options.force_precision)
    rate = frontend_params.sampling_rate
    window = round(options.window_s * rate)
    hop = round(options.hop_s * rate)
    files = find_audio_files(paths)
    if not files:
        raise AudioError(f"no audio files found in {', '.join(map(str, paths))}",
                         "pass WAV/FLAC/MP3/OGG files or folders that contain them")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tables(out_dir)
    csv_sink = DetectionsCsv(out_dir, rate)
    result = AnalyzeResult(csv_sink.path)
    used_names: set[str] = set()
    try:
        for number, path in enumerate(files):
            if on_file:
                on_file(number, len(files), path.name)
            warning = truncation_warning(path)
            if warning:
                result.warnings.append(warning)
            try:
                detections = analyze_chunks(stages, stream_file(path, rate, warn_truncated=False), window, hop,
                                            options.batch)
            except AudioError as e:
                result.failures.append(str(e))
                continue
            csv_sink.write(path, detections, recording_start_utc(path))
            write_raven_table(out_dir / _unique_table_name(path, used_names), detections, rate,
                              frontend_params.f_min, frontend_params.f_max, path)
            result.files_ok += 1
            result.detections += len(detections)
        if on_file:
            on_file(len(files), len(files), "done")
    finally:
        csv_sink.close()
    result.run_record = write_run_record(out_dir, run_record(
        bundle, options.precision, labels_path, labels, score_mode=options.score_mode, threshold=options.threshold,
        top_k=options.top_k, window_s=options.window_s, hop_s=options.hop_s, sample_rate=rate,
        raven_band_hz=(frontend_params.f_min, frontend_params.f_max), files_ok=result.files_ok,
        files_failed=len(result.failures), detections=result.detections))
    return result
