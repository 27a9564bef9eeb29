"""``biolingual-edge``: analyse recordings and run the recorder-unit daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from edge.batch.cli_defaults import ANALYZE_BATCH, ANALYZE_FORMATS, DEFAULT_FORMATS, FORMAT_HELP
from edge.batch.pieces import DEFAULT_PIECE_S
from edge.cli_labels import labels_app
from edge.cli_ops import register as register_ops
from edge.cli_support import HEAD_HELP, renamed, report_errors, setup_logging, stderr
from edge.ops.bench import bench_command

DESK_GROUP = "logs"
GROUP_ENTRY_POINTS = "biolingual_edge.groups"
DESK_HELP = "Desk side: collect SD cards into a season archive, rescore, search, review, report (the desk extra)."


class UnitCommands(TyperGroup):
    """The unit's commands plus ``logs``, the desk's group, imported only when a ``logs`` command runs.

    A recorder runs ``run``, ``check``, ``labels add`` and ``analyze`` without loading a desk module (and
    without duckdb, pyarrow or matplotlib installed); ``logs …`` loads ``desk.cli`` on demand.
    """

    # Context and Command are click's (typer >= 0.24 vendors its own copy), hence ``Any``.
    def list_commands(self, ctx: Any) -> list[str]:
        return sorted([*super().list_commands(ctx), DESK_GROUP])

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name != DESK_GROUP:
            return super().get_command(ctx, cmd_name)
        return desk_group()


def desk_group() -> Any:
    """The desk's ``logs`` group, found through the ``biolingual_edge.groups`` entry point (the unit runtime
    names no desk module), or a stand-in that says how to install the desk where it is missing."""
    from importlib.metadata import entry_points

    found = entry_points(group=GROUP_ENTRY_POINTS, name=DESK_GROUP)
    try:
        logs_app = next(iter(found)).load() if found else None
        missing = "biolingual-edge[desk]"
    except ImportError as e:
        logs_app, missing = None, e.name or str(e)
    if logs_app is None:
        logs_app = typer.Typer(help=DESK_HELP, add_completion=False)

        @logs_app.command(DESK_GROUP, help=DESK_HELP, add_help_option=False,
                          context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        def unavailable() -> None:
            stderr.print(f"error: the desk commands need '{missing}', which is not installed here")
            stderr.print("hint: pip install 'biolingual-edge\\[desk]' on the desk machine (never needed on a unit)")
            raise typer.Exit(2)

    group = typer.main.get_command(logs_app)
    group.name = DESK_GROUP
    return group


app = typer.Typer(
    cls=UnitCommands,
    help="BioLingual on a recorder unit: zero-shot species detection from a microphone or recordings.",
    no_args_is_help=True,
    add_completion=False,
)
register_ops(app)
app.add_typer(labels_app, name="labels")

BundleOpt = Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder made by `biolingual-export`.")]
LabelsOpt = Annotated[Path, typer.Option("--labels", "-l", help="Species list: one label per line.")]


app.command("bench")(bench_command)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False) -> None:
    """Analyse recordings or run the field daemon with a model bundle."""
    setup_logging(verbose)


@app.command()
@report_errors
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="Recordings or folders (searched recursively).")],
    labels: LabelsOpt,
    bundle: BundleOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for detections.csv and Raven tables.")],
    window: Annotated[float, typer.Option(help="Window length in seconds (at most the model's 10 s).")] = 10.0,
    hop: Annotated[float, typer.Option(help="Hop between window starts in seconds.")] = 5.0,
    threshold: Annotated[float | None, typer.Option(help="Keep labels scoring at least this.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Labels kept per window.")] = 1,
    precision: Annotated[str, typer.Option(help="Model precision in the bundle: fp32, fp16, int8.")] = "fp32",
    score_mode: Annotated[str, typer.Option(help="logit (cosine × scale) or softmax across the list.")] = "logit",
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads per worker (default: cores / workers).")]
    = None,
    batch: Annotated[int, typer.Option(help="Windows per inference call (1, the default, is the fastest on CPUs).")]
    = ANALYZE_BATCH,
    force_precision: Annotated[bool, typer.Option(help="Use a precision whose parity report is missing/failed.")]
    = False,
    workers: Annotated[int | None, typer.Option(help="Worker processes (Ray: actors); default: one per core.")]
    = None,
    engine: Annotated[str, typer.Option(help="local (process pool) or ray (pip install 'biolingual-edge\\[ray]').")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (default: a private local one).")]
    = None,
    ray_stall_seconds: Annotated[float | None, typer.Option(
        help="Ray: fail the job (naming the pieces not done; --resume finishes) when no piece has come back for "
        "this long, or 10× the longest wait so far if longer (default: 600).")] = None,
    piece_seconds: Annotated[float, typer.Option(
        help="Seconds of audio per piece: long recordings are cut into pieces spread over the workers.")]
    = DEFAULT_PIECE_S,
    old_piece_seconds: Annotated[float | None, typer.Option("--unit", hidden=True, help="Old spelling.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT instead of starting over.")]
    = False,
    embeddings: Annotated[Path | None, typer.Option(
        help="Also archive every window's embedding in this folder, with each recording's effort, as a season "
        "for `logs collect` (rescore, search, report).")] = None,
    unit_id: Annotated[str | None, typer.Option(
        "--unit-id", help="Recorder/site id of every recording in --embeddings (default: each recording's "
        "folder name, i.e. one folder per site).")] = None,
    head: Annotated[list[str] | None, typer.Option("--head", help=HEAD_HELP)] = None,
    formats: Annotated[str, typer.Option("--format", help=FORMAT_HELP.format(allowed=", ".join(ANALYZE_FORMATS)))]
    = ",".join(DEFAULT_FORMATS),
) -> None:
    """Detect species in recordings; writes OUT/detections.csv and one Raven selection table per file."""
    # imported here, not at the top: `run` (the unit daemon) builds this CLI too and must not carry them
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edge.batch.analyze import AnalyzeOptions, RunOptions, analyze_paths
    from edge.batch.run_record import ALL_WINDOWS_NOTE
    from edge.batch.tables import parse_formats

    options = AnalyzeOptions(window_s=window, hop_s=hop, threshold=threshold, top_k=top_k, precision=precision,
                             score_mode=score_mode, threads=threads, batch=batch,
                             force_precision=force_precision, embeddings_dir=embeddings, unit_id=unit_id,
                             heads=tuple(head or ()), formats=parse_formats(formats, ANALYZE_FORMATS, "analyze"))
    run_options = RunOptions(workers=workers, engine=engine, ray_address=ray_address, ray_stall_s=ray_stall_seconds,
                             piece_s=_piece_seconds(piece_seconds, old_piece_seconds), resume=resume)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, transient=False) as progress:
        task = progress.add_task("analysing", total=None)

        def on_progress(done: int, total: int, name: str) -> None:
            progress.update(task, completed=done, total=total, description=name[-40:])

        result = analyze_paths(paths, labels, bundle, out, options, on_progress, run_options)
    for failure in result.failures:
        stderr.print(f"[bold red]error:[/] {escape(failure)}", soft_wrap=True)
    for warning in result.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if threshold is None:
        stderr.print(f"note: {ALL_WINDOWS_NOTE.format(k=top_k)}; pass --threshold to keep only confident ones",
                     soft_wrap=True)
    resumed = (f" ({result.pieces_resumed} of {result.pieces} pieces from the earlier run)"
               if result.pieces_resumed else "")
    stderr.print(f"{result.files_ok} file(s) analysed, {result.detections} detection(s), "
                 f"{len(result.failures)} failed -> {result.csv_path or out}{resumed} "
                 f"(settings in {result.run_record})",
                 soft_wrap=True)
    if result.failures:
        raise typer.Exit(1)


def _piece_seconds(chosen: float, old: float | None) -> float:
    return renamed(None if chosen == DEFAULT_PIECE_S else chosen, old, "--unit", "--piece-seconds") or chosen


@app.command()
@report_errors
def run(
    labels: Annotated[Path | None, typer.Option("--labels", "-l", help="Species list: one label per line.")]
    = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", help="Bundle folder from biolingual-export.")]
    = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Unit config YAML (firmware_configs/).")]
    = None,
    profile: Annotated[str | None, typer.Option("--profile", "-p",
                                                help="Shipped hardware profile, e.g. jetson-orin-nano.")] = None,
    old_profile: Annotated[str | None, typer.Option("--unit", "-u", hidden=True, help="Old spelling.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: analysis.hop_s=2.5")]
    = None,
    log_dir: Annotated[Path | None, typer.Option(
        help="Where the detection log is written (the SD card); created if missing. Default: storage.log_dir of "
             "--config/--profile, else ./logs.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Score a window needs to count as a hit.")] = None,
    confirm: Annotated[str | None, typer.Option(help="N/M: hits needed in the last M windows.")] = None,
    window: Annotated[float | None, typer.Option(help="Window length in seconds.")] = None,
    hop: Annotated[float | None, typer.Option(help="Hop between windows in seconds.")] = None,
    device: Annotated[str | None, typer.Option(help="Part of the microphone's name (see `devices`).")] = None,
    rate: Annotated[int | None, typer.Option(help="Capture rate in Hz (default 48000, else the device's).")]
    = None,
    channel: Annotated[int | None, typer.Option(help="Use one input channel (0-based) instead of the mix.")] = None,
    precision: Annotated[str | None, typer.Option(help="Model precision in the bundle: fp32, fp16, int8.")] = None,
    score_mode: Annotated[str | None, typer.Option(help="logit (cosine × scale) or softmax across the list.")]
    = None,
    heartbeat: Annotated[float | None, typer.Option(help="Seconds between health records.")] = None,
    input_file: Annotated[Path | None, typer.Option("--input", help="Stream a recording instead of the mic.")]
    = None,
    fast: Annotated[bool, typer.Option(help="With --input: as fast as possible, not real time.")] = False,
    force_precision: Annotated[bool, typer.Option(
        help="Run a precision even if its parity report is missing or failed.")] = False,
    head: Annotated[list[str] | None, typer.Option("--head", help=HEAD_HELP + " Sets analysis.heads.")] = None,
) -> None:
    """Listen to the microphone (or --input FILE) and log detections until stopped (SIGTERM/Ctrl-C).

    Settings come from --config/--profile, then --set KEY=VALUE, then the flags here (flags win).
    """
    from edge.config.loader import parse_override, resolve_config
    from edge.daemon.contract import EXIT_CARD_INCOMPLETE
    from edge.ops.checks import read_sync_state
    from edge.ops.setup import CLOCK_SYNC_FROM_SYSTEMD, InputOptions, build_daemon
    from edge.run_flags import run_overrides

    overrides = dict(parse_override(s) for s in set_ or [])
    overrides.update(run_overrides(labels=labels, bundle=bundle, log_dir=log_dir, threshold=threshold,
                                   confirm=confirm, window=window, hop=hop, device=device, rate=rate,
                                   channel=channel, precision=precision, score_mode=score_mode,
                                   heartbeat=heartbeat))
    if head:
        overrides["analysis.heads"] = list(head)
    unit = renamed(profile, old_profile, "--unit", "--profile")
    resolved = resolve_config(config, unit, overrides)
    source = InputOptions(input_file, fast=fast) if input_file is not None else None
    clock = CLOCK_SYNC_FROM_SYSTEMD.get(read_sync_state() or "", "unsynchronised")
    # a folder named on the command line (or the ./logs default) is created; one from a config is the card
    named_here = overrides.get("storage.log_dir") is not None or (config is None and unit is None)
    daemon = build_daemon(resolved, source, clock_sync=clock, force_precision=force_precision,
                          create_log_dir=named_here)
    code = daemon.run()
    audio_s = daemon.analysed_end / daemon.options.sample_rate
    stderr.print(f"{daemon.windows_analysed} window(s) analysed ({audio_s:.0f} s of audio), "
                 f"{daemon.detections_logged} detection(s) -> card log {resolved.storage.log_dir}", soft_wrap=True)
    if daemon.card_trouble is not None and code == EXIT_CARD_INCOMPLETE:
        raise daemon.card_trouble.as_error(resolved.storage.log_dir)
    if code:
        raise typer.Exit(code)


@app.command()
@report_errors
def devices() -> None:
    """List audio input devices with their channels and supported sample rates."""
    from edge.audio.mic import input_devices, supported_rates

    for device in input_devices():
        rates = ", ".join(str(r) for r in supported_rates(device)) or "none of the common rates"
        typer.echo(f"{device.index}: {device.name} — {device.channels} ch, default {device.default_rate:g} Hz; "
                   f"rates: {rates}")
