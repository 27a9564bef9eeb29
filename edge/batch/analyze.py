"""``analyze``: recordings on disk -> detections.csv + Raven tables, one bad file never stopping the rest.

The archive is cut into pieces (``edge/batch/pieces.py``), analysed by a local process pool
(``edge/batch/pool.py``) or Ray (``desk/ray_engine.py``), and written by one writer with a work log
(``edge/batch/writer.py``) so a killed run can ``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge.audio.files import band_warning, find_audio_files, truncation_warning
from edge.audio.recording_time import recording_start_utc
from edge.batch.cli_defaults import ANALYZE_FORMATS as ANALYZE_FORMATS
from edge.batch.piece_analysis import AnalysisSpec, AnalyzeOptions, PieceResult
from edge.batch.pieces import DEFAULT_PIECE_S, Piece, WindowGrid, plan_pieces
from edge.batch.pool import available_cores, run_local, split_threads
from edge.batch.run_record import run_record, write_run_record
from edge.batch.tables import parse_formats, remove_stale_tables
from edge.batch.writer import AnalysisWriter, PieceSink, WorkLog, job_fingerprint
from edge.card.embeddings import FileEmbeddingArchive, embedding_spec, file_boot_id
from edge.card.recording_log import RecordingSeasonLog, folder_unit
from edge.errors import AudioError, BackendError, ConfigError, OutputError
from edge.model.bundle import open_bundle, sha256_file
from edge.model.precision_gate import check_precision, model_key
from edge.scoring.labels import read_labels
from edge.scoring.scorer import SCORE_MODES
from edge.stream.pipeline import label_rules, scoring_provenance

ENGINES = ("local", "ray")
ENGINE_ENTRY_POINTS = "biolingual_edge.engines"

__all__ = ["AnalyzeOptions", "AnalyzeResult", "RunOptions", "analyze_paths"]


@dataclass(frozen=True)
class RunOptions:
    """How the work is spread: engine, workers, piece size, resume."""

    workers: int | None = None
    """Processes (local) or actors (Ray); None: as many as the cores allow with ``threads`` each."""
    engine: str = "local"
    ray_address: str | None = None
    """Join this Ray cluster instead of starting a private local instance."""
    ray_stall_s: float | None = None
    """Ray: fail the job after this long without a result (None: the engine's default, see desk/ray_stall.py)."""
    piece_s: float = DEFAULT_PIECE_S
    """Audio per piece, seconds (rounded up to whole inference batches)."""
    resume: bool = False
    """Continue the run logged in the output folder instead of starting over."""


@dataclass
class AnalyzeResult:
    """What an ``analyze`` run did (resumed pieces included)."""

    csv_path: Path | None
    """``detections.csv``; None when ``--format`` leaves csv out."""
    run_record: Path | None = None
    files_ok: int = 0
    detections: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Files analysed with a caveat (cut short), one line each naming the file."""
    pieces: int = 0
    pieces_resumed: int = 0
    """Pieces already done by an earlier, interrupted run and skipped now."""


ProgressCallback = Callable[[int, int, str], None]
"""(pieces done, pieces in total, file name) after each piece."""


def _check_choices(options: AnalyzeOptions) -> None:
    """Options that need no bundle, checked before anything is opened."""
    if options.score_mode not in SCORE_MODES:
        raise ConfigError(f"unknown --score-mode '{options.score_mode}'", f"use {' or '.join(SCORE_MODES)}")
    if options.top_k < 1 or options.batch < 1:
        raise ConfigError("--top-k and --batch must be at least 1", "pass positive integers")
    parse_formats(",".join(options.formats), ANALYZE_FORMATS, "analyze")
    if options.unit_id is not None and options.embeddings_dir is None:
        raise ConfigError("--unit-id names the recorder of an --embeddings season", "add --embeddings DIR")
    if options.unit_id is not None and (not options.unit_id.strip() or not options.unit_id.isprintable()):
        raise ConfigError(f"--unit-id {options.unit_id!r} is empty or has control characters",
                          "pass a short printable id, e.g. the site name")


def _check_timing(options: AnalyzeOptions, max_window_s: float) -> None:
    if not 0 < options.window_s <= max_window_s:
        raise ConfigError(f"--window {options.window_s:g} s is outside 0..{max_window_s:g} s",
                          f"the model sees at most {max_window_s:g} s at once")
    if not 0 < options.hop_s <= options.window_s:
        raise ConfigError(f"--hop {options.hop_s:g} s must be > 0 and <= --window ({options.window_s:g} s)",
                          "use a hop no longer than the window so no audio is skipped")


def _check_run(run: RunOptions) -> None:
    if run.engine not in ENGINES:
        raise ConfigError(f"unknown engine '{run.engine}'", f"choose one of: {', '.join(ENGINES)}")
    if run.piece_s <= 0:
        raise ConfigError(f"--piece-seconds {run.piece_s:g} must be > 0", "pieces of a few minutes suit most archives")
    for flag, given in (("--ray-address", run.ray_address), ("--ray-stall-seconds", run.ray_stall_s)):
        if given is not None and run.engine != "ray":
            raise ConfigError(f"{flag} needs --engine ray", "add --engine ray")
    if run.ray_stall_s is not None and not run.ray_stall_s > 0:
        raise ConfigError(f"--ray-stall-seconds {run.ray_stall_s:g} must be > 0",
                          "pass the seconds a Ray job may go without a result before it fails")


def _workers_and_threads(run: RunOptions, threads: int | None) -> tuple[int | None, int]:
    """Workers (None: let the Ray cluster's CPUs decide) and ONNX Runtime threads per worker."""
    if run.ray_address is not None:
        return run.workers, threads or 1  # the cluster's cores are not this machine's
    return split_threads(run.workers, threads, available_cores())


def _results(spec: AnalysisSpec, pieces: list[Piece], run: RunOptions, workers: int | None) -> Iterator[PieceResult]:
    if run.engine == "local":
        return run_local(spec, pieces, workers or 1)
    engine = _installed_engine(run.engine)
    stall = {} if run.ray_stall_s is None else {"stall_s": run.ray_stall_s}
    return engine(spec, pieces, workers, run.ray_address, cpus=None if run.ray_address else available_cores(),
                  **stall)


def _installed_engine(name: str) -> Callable[..., Iterator[PieceResult]]:
    """A distributed engine registered under the ``biolingual_edge.engines`` entry points (the desk's Ray
    engine is one): the unit runtime names no desk module, so it runs where the desk is not installed."""
    from importlib.metadata import entry_points

    found = entry_points(group=ENGINE_ENTRY_POINTS, name=name)
    if not found:
        raise ConfigError(f"--engine {name} is not installed here",
                          f"pip install 'biolingual-edge[{name}]' (desk side), or use --engine local")
    try:
        engine: Callable[..., Iterator[PieceResult]] = next(iter(found)).load()
    except ImportError as e:
        raise ConfigError(f"--engine {name} cannot load: {e}",
                          f"pip install 'biolingual-edge[{name}]' (desk side), or use --engine local") from e
    return engine


def _season_settings(model_id: str, labels_key: str, options: AnalyzeOptions) -> dict[str, object]:
    """What every recording of an ``--embeddings`` season was analysed with (its boots' settings)."""
    return {"source": "analyze", "model": model_id, "labels_key": labels_key, "window_s": options.window_s,
            "hop_s": options.hop_s, "threshold": options.threshold, "top_k": options.top_k,
            "score_mode": options.score_mode, "precision": options.precision, "heads": list(options.heads)}


def analyze_paths(paths: list[Path], labels_path: Path, bundle_dir: Path, out_dir: Path, options: AnalyzeOptions,
                  on_progress: ProgressCallback | None = None, run: RunOptions | None = None,
                  sinks: Sequence[PieceSink] = (), keep_embeddings: bool = False) -> AnalyzeResult:
    """Analyse every recording under ``paths``; unreadable files are reported in ``failures``.

    ``sinks`` are extra outputs fed by the single writer (``keep_embeddings`` sends each window's embedding
    back from the workers for them).
    """
    run = run or RunOptions()
    _check_run(run)
    _check_choices(options)
    bundle = open_bundle(bundle_dir, verify="on_read")  # hash what this run reads, not every precision
    frontend_params = bundle.manifest.frontend
    _check_timing(options, frontend_params.max_length_s)
    labels = read_labels(labels_path)
    check_precision(bundle, model_key("ort", options.precision), options.force_precision)
    bundle.check_model(model_key("ort", options.precision))  # what the workers load: checked here, once
    # fails here, not in workers; what it resolved goes into run.json
    _, per_label, confidence = label_rules(bundle, labels, str(labels_path), options.heads, options.score_mode)
    scoring = scoring_provenance(bundle, options.heads, per_label, confidence, options.threshold)
    files = find_audio_files(paths)
    if not files:
        raise AudioError(f"no audio files found in {', '.join(map(str, paths))}",
                         "pass WAV/FLAC/MP3/OGG files or folders that contain them")
    rate = frontend_params.sampling_rate
    grid = WindowGrid(round(options.window_s * rate), round(options.hop_s * rate), options.batch)
    pieces = plan_pieces(files, rate, grid, round(run.piece_s * rate))
    workers, threads = _workers_and_threads(run, options.threads)
    archive_spec = embedding_spec(bundle, options.precision, "fp16") if options.embeddings_dir else None
    site_of = folder_unit if options.unit_id is None else (lambda _: str(options.unit_id))
    season_log = None
    if options.embeddings_dir is not None and archive_spec is not None:
        model_sha = archive_spec.model_sha256
        season_log = RecordingSeasonLog(
            options.embeddings_dir, rate, recording_start_utc, site_of, lambda p: file_boot_id(p, model_sha),
            _season_settings(bundle.manifest.model_id, labels.key, options), options.threshold is not None)
        sinks = [*sinks, FileEmbeddingArchive(options.embeddings_dir, rate, archive_spec, recording_start_utc,
                                              site_of), season_log]
        keep_embeddings = True
    spec = AnalysisSpec(bundle_dir, labels_path, options, grid, rate, threads, keep_embeddings=keep_embeddings,
                        verify_bundle=run.engine == "ray", verified=tuple(bundle.stamps().items()))
    description = {"manifest": (bundle.root / "manifest.json").read_text(encoding="utf-8"), "labels": labels.key,
                   "options": dataclasses.asdict(dataclasses.replace(options, threads=None))}
    writing = _writing_to([out_dir, *([options.embeddings_dir] if options.embeddings_dir else [])])
    with writing():
        out_dir.mkdir(parents=True, exist_ok=True)
        if not run.resume:
            remove_stale_tables(out_dir)
    plan = hashlib.sha256(json.dumps([p.key for p in pieces], default=str).encode()).hexdigest()[:12]
    settings = {**dataclasses.asdict(dataclasses.replace(options, threads=None)), "labels": labels.key,
                "labels_file": str(labels_path), "bundle": sha256_file(bundle.root / "manifest.json")[:16],
                "recordings": f"{len(files)} file(s), {len(pieces)} piece(s), plan {plan}"}
    with writing():
        worklog = WorkLog(out_dir, job_fingerprint(description, pieces), run.resume, settings)
        writer = AnalysisWriter(out_dir, rate, (frontend_params.f_min, frontend_params.f_max), files, worklog, sinks,
                                options.formats, dict(zip(labels.names, labels.scientific_names)), site_of)
    result = AnalyzeResult(None if writer.csv is None else writer.csv.path, pieces=len(pieces),
                           pieces_resumed=worklog.done,
                           warnings=[w for path in files for w in (truncation_warning(path),
                                                                   band_warning(path, frontend_params.f_max)) if w])
    try:
        todo = pieces[worklog.done :]
        written = 0
        for unit_result, piece in zip(_results(spec, todo, run, workers), todo):  # the engine first: it ends
            with writing():
                writer.write(piece, unit_result)
            written += 1
            if on_progress:
                on_progress(piece.index + 1, len(pieces), piece.path.name)
        if written < len(todo):  # an engine that stops short must never look like a finished job
            raise BackendError(f"the {run.engine} engine returned {written} of {len(todo)} pieces; pieces "
                               f"{todo[written].index + 1}-{todo[-1].index + 1} not done",
                               "rerun the same command with --resume to finish")
    except BaseException:
        with contextlib.suppress(OSError):  # the first failure is the one to report
            writer.close()
        raise
    with writing():
        writer.close()
    if season_log is not None and season_log.undated:
        result.warnings.append(f"{len(season_log.undated)} recording(s) have no start time ({season_log.undated[0]}"
                               f"{' ...' if len(season_log.undated) > 1 else ''}): their windows are archived but "
                               "add no effort to the season; name them YYYYMMDD_HHMMSS.wav (UTC) as AudioMoth does")
    result.detections = writer.totals.detections
    result.failures = list(writer.totals.failures.values())
    result.files_ok = len(files) - len(writer.totals.failures)
    with writing():
        result.run_record = write_run_record(out_dir, run_record(
            bundle, options.precision, labels_path, labels, score_mode=options.score_mode,
            threshold=options.threshold, top_k=options.top_k, window_s=options.window_s, hop_s=options.hop_s,
            sample_rate=rate, raven_band_hz=(frontend_params.f_min, frontend_params.f_max), files_ok=result.files_ok,
            files_failed=len(result.failures), detections=result.detections, scoring=scoring))
    return result


def _writing_to(folders: list[Path]) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """A context that turns an output write failing (full disk, read-only or vanished folder) into one
    :class:`OutputError` naming ``folders``: what the work log holds is kept, and ``--resume`` finishes."""

    @contextlib.contextmanager
    def writing() -> Iterator[None]:
        try:
            yield
        except OSError as e:
            where = " or ".join(str(folder) for folder in folders)
            raise OutputError(f"cannot write the results to {where}: {e.strerror or e}",
                              "free space there (or make it writable), then rerun the same command with --resume "
                              "to finish: the pieces already written are kept") from e

    return writing
