"""``biolingual-edge logs``: collect SD-card logs into DuckDB, export them, summarise unit health."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from desk.cli_live import register as register_live_command
from desk.cli_review import register as register_review_commands
from desk.collect.ingest import collect as collect_cards
from desk.collect.seasons import connect_seasons
from desk.ray_stall import DEFAULT_STALL_S, STALL_FACTOR
from desk.report.exports import export as export_detections
from desk.report.summary import summarise
from edge.batch.tables import DEFAULT_FORMATS, FORMAT_HELP, FORMATS, parse_formats
from edge.cli_support import HEAD_HELP, renamed, report_errors, stderr
from edge.errors import ConfigError
from edge.model.bundle import open_bundle

if TYPE_CHECKING:
    from desk.archive.rescore import RescoreOptions

logs_app = typer.Typer(help="Collect SD-card logs from recorder units, export and summarise them.",
                       no_args_is_help=True, add_completion=False)

register_review_commands(logs_app)
register_live_command(logs_app)

RESCORE_FORMATS = ("csv", "raven", "audacity", "birdnet", "occupancy")
DbsOpt = Annotated[list[Path], typer.Option("--db", help="Collection database made by `logs collect`; repeat it to "
                                                         "read several (years, sites) as one.")]
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
SpaceOpt = Annotated[str | None, typer.Option("--space", help="The archive's embedding space to work in (a prefix; "
                                              "needed when the archive holds windows of several).")]
EngineOpt = Annotated[str, typer.Option(help="local (this process) or ray: the archive's files as a Ray Data job "
                                             "(pip install 'biolingual-edge\\[ray]'); search needs --exact.")]
RayAddressOpt = Annotated[str | None, typer.Option(help="Join this Ray cluster (default: a private local one); "
                                                        "every node must see the archive at the same path.")]
RayStallOpt = Annotated[float | None, typer.Option(
    help="Ray: fail the job (naming the archive files not read) when no result has come back for this long, or "
    f"{STALL_FACTOR:g}× the longest wait so far if longer (default: {DEFAULT_STALL_S:g}).")]


@logs_app.command()
@report_errors
def collect(
    into: Annotated[Path, typer.Option("--into", help="DuckDB database to create or add to.")],
    cards: Annotated[list[Path] | None, typer.Argument(help="Card folders (the root the unit wrote its log to); "
                                                            "fallback files (*.unwritten.jsonl) at their top or one "
                                                            "folder down are collected with them.")] = None,
    unwritten: Annotated[list[Path] | None, typer.Option(
        "--unwritten", help="A unit's fallback file (storage.fallback_dir/<boot>.unwritten.jsonl: rows its card could "
                            "not take), or a folder searched for them; repeatable.")] = None,
    parquet: Annotated[Path | None, typer.Option("--parquet", help="Also write every table as Parquet here.")]
    = None,
    quiet_info: Annotated[bool, typer.Option("--quiet-info", help="Hide info-level findings.")] = False,
) -> None:
    """Ingest card folders and the rows units could not write to their cards (idempotent: re-collecting adds
    nothing; a row on the card and in a fallback file counts once) and report what needs attention; exit 1 when
    any finding is an error."""
    if not cards and not unwritten:
        raise ConfigError("logs collect needs a card folder or --unwritten",
                          "name the card folders (and any fallback files with --unwritten FILE_OR_FOLDER)")
    result = collect_cards(cards or [], into, parquet, on_card=lambda card: stderr.print(f"reading {card}"),
                           unwritten=unwritten or [])
    for finding in result.findings:
        if quiet_info and finding.severity == "info":
            continue
        style = SEVERITY_STYLE.get(finding.severity, "")
        stderr.print(f"[{style}]{finding.severity}:[/] [{finding.check}] {finding.message}", soft_wrap=True)
    added = ", ".join(f"{n} {table}" for table, n in result.added.items() if n) or "nothing new"
    errors = sum(f.severity == "error" for f in result.findings)
    warnings = sum(f.severity == "warning" for f in result.findings)
    files = f" and {result.unwritten} fallback file(s)" if result.unwritten else ""
    stderr.print(f"{result.cards} card(s){files}: {result.read.get('detections', 0)} detection rows read, added "
                 f"{added}; {errors} error(s), {warnings} warning(s) -> {into}")
    if errors:  # what was readable is in the database; the errors above need attention before it is trusted
        raise typer.Exit(1)


EXPORT_FORMATS = (*FORMATS, "hoplite")


@logs_app.command()
@report_errors
def export(
    db: DbsOpt,
    file_format: Annotated[str, typer.Option("--format", help=FORMAT_HELP.format(allowed=", ".join(EXPORT_FORMATS))
                                             + " hoplite: on its own, see below.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the tables (a single csv or parquet: the file, "
                                      "when its name ends .csv / .parquet); hoplite: the new database folder.")],
    review: Annotated[list[Path] | None, typer.Option("--review", help="hoplite: review.csv of `logs review` on these "
                                                      "--db; its verdicts become annotations (repeatable).")] = None,
    project: Annotated[str | None, typer.Option(help="hoplite: the project of the deployments (default: the "
                                                     "databases' names, joined by +).")] = None,
    reviewer: Annotated[str | None, typer.Option(help="hoplite: who gave the verdicts (in each annotation's "
                                                      "provenance).")] = None,
    space: SpaceOpt = None,
) -> None:
    """Export detections: tidy CSV/Parquet with provenance, Raven selection tables, Audacity labels, BirdNET's
    table, an occupancy history. `--format hoplite` instead writes the archive's windows as a perch-hoplite
    database (SQLite + usearch, for Perch's agile modeling) of every --db as one (window ids translated as
    search translates them): units as deployments, recordings (a unit's stream when no audio file), window
    offsets, the float16 embeddings, and `--review` verdicts as positive / negative / uncertain annotations.
    Not carried over: detections, scores other than the one each verdict was given at, P(correct), unit health
    and effort, card clips (README: Season archive, Open to Perch)."""
    formats = parse_formats(file_format, EXPORT_FORMATS, "logs export")
    if "hoplite" in formats:
        from desk.report.hoplite import export_hoplite

        if len(formats) > 1:
            raise ConfigError("--format hoplite writes a database folder and goes on its own",
                              "run `logs export` once for hoplite and once for the tables")
        done = export_hoplite(db, out, review or [], project, reviewer, space)
        stderr.print(f"wrote a perch-hoplite database -> {out}: {done.windows} window(s) of {done.deployments} "
                     f"unit(s) in {done.recordings} recording(s), {done.annotations} annotation(s)")
        return
    if review or project or reviewer or space:
        raise ConfigError("--review, --project, --reviewer and --space belong to --format hoplite",
                          "leave them out, or export with --format hoplite")
    con = connect_seasons(db)
    try:
        paths = export_detections(con, file_format, out)
    finally:
        con.close()
    stderr.print(f"wrote {len(paths)} file(s) -> {out}")


@logs_app.command()
@report_errors
def summary(
    db: DbsOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for SUMMARY.csv and the PNG plots.")],
) -> None:
    """Per-unit health table (uptime, effort, xruns, gaps, temperature, disk) and plots."""
    con = connect_seasons(db)
    try:
        paths = summarise(con, out)
    finally:
        con.close()
    for path in paths:
        stderr.print(f"wrote {path}")


def _utc_option(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name} '{value}' is not an ISO date/time", "e.g. 2024-05-01 or 2024-05-01T21:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@logs_app.command()
@report_errors
def rescore(
    db: DbsOpt,
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="The bundle the units ran (its label embeddings).")],
    labels: Annotated[Path, typer.Option("--labels", "-l", help="The new species list.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for detections.csv and Raven tables.")],
    threshold: Annotated[float | None, typer.Option(help="Keep labels scoring at least this.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Labels kept per window.")] = 1,
    score_mode: Annotated[str | None, typer.Option(help="logit (cosine × scale, the default) or softmax across "
                                                        "the list.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Unit config: re-run its detector rules "
                                                 "(thresholds, hysteresis, N-of-M, cooldown, heads, installed "
                                                 "confidence) per stream.")] = None,
    formats: Annotated[str, typer.Option("--format", help=FORMAT_HELP.format(allowed=", ".join(RESCORE_FORMATS)))]
    = ",".join(DEFAULT_FORMATS),
    space: SpaceOpt = None,
    head: Annotated[list[str] | None, typer.Option("--head", help=HEAD_HELP + " Default with --config: its "
                                                   "analysis.heads.")] = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_stall_seconds: RayStallOpt = None,
) -> None:
    """Score every archived window against a new label list; writes what `analyze` writes."""
    from desk.archive.rescore import RescoreOptions
    from desk.archive.rescore import rescore as rescore_archive

    if top_k < 1:
        raise ConfigError("--top-k must be at least 1", "pass a positive integer")
    chosen = parse_formats(formats, RESCORE_FORMATS, "logs rescore")
    options = RescoreOptions(threshold=threshold, top_k=top_k, score_mode=score_mode or "logit")
    if config is not None:
        options = _config_rules(config, bundle, labels, threshold, score_mode)
    options = dataclasses.replace(options, formats=chosen, space=space, heads=tuple(head) if head else options.heads,
                                  engine=engine, ray_address=ray_address, ray_stall_s=ray_stall_seconds)
    result = rescore_archive(db, bundle, labels, out, options)
    if result.other_model:
        stderr.print(f"{result.other_model} archived window(s) of other embedding spaces left alone (--space)")
    stderr.print(f"{result.windows} window(s) re-scored, {result.rows} row(s) -> {result.csv_path or out}")


def _config_rules(config: Path, bundle: Path, labels: Path, threshold: float | None,
                  score_mode: str | None) -> RescoreOptions:
    """The unit's rules from its config; ``--threshold``/``--score-mode`` must agree with it (or be left out)."""
    from desk.archive.rescore import RescoreOptions
    from edge.config.loader import resolve_config
    from edge.ops.setup import detector_options

    resolved = resolve_config(config, None, {"model.bundle": str(bundle.resolve()),
                                             "analysis.labels": str(labels.resolve())})
    analysis = resolved.analysis
    for flag, given, configured in (("--threshold", threshold, analysis.threshold),
                                    ("--score-mode", score_mode, analysis.score_mode)):
        if given is not None and given != configured:
            raise ConfigError(f"{flag} {given} conflicts with the unit config {config} ({configured})",
                              f"leave {flag} out (the config's rules apply), or change the config")
    rate = open_bundle(bundle).manifest.frontend.sampling_rate
    rules = detector_options(resolved, rate)
    rules.validate(round(analysis.window_s * rate), round(analysis.hop_s * rate))
    prompts = tuple(analysis.background_prompts + analysis.privacy_prompts)
    return RescoreOptions(score_mode=analysis.score_mode, rules=rules, hidden_labels=prompts, extra_prompts=prompts,
                          heads=tuple(analysis.heads))


@logs_app.command()
@report_errors
def search(
    db: DbsOpt,
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="The bundle the units ran.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for hits.csv, a Raven table and clips.")],
    text: Annotated[str | None, typer.Option(help='What to find, e.g. "frog chorus at night".')] = None,
    example: Annotated[str | None, typer.Option(
        help="A recording like the sound wanted: FILE\\[@START_S] (start in seconds).")] = None,
    top: Annotated[int, typer.Option(help="Hits to keep.")] = 20,
    unit: Annotated[str | None, typer.Option(help="Only this unit.")] = None,
    since: Annotated[str | None, typer.Option("--from", help="Only windows starting at/after (UTC).")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Only windows starting before (UTC).")] = None,
    clips: Annotated[bool, typer.Option(help="Cut each hit's audio where its recording is on disk.")] = False,
    model: Annotated[Path | None, typer.Option(help="Checkpoint for --text when the bundle has no text encoder "
                                                    "(needs the export extra).")] = None,
    exact: Annotated[bool, typer.Option(help="Score every window instead of the index's candidates (collect "
                                             "indexes archives of 20 000 windows or more).")] = False,
    space: SpaceOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_stall_seconds: RayStallOpt = None,
) -> None:
    """Rank archived windows by cosine to a text query or an example sound."""
    from desk.archive.search import example_query, text_query, write_hits
    from desk.archive.search import search as search_archive
    from desk.archive.windows import WindowFilter

    if (text is None) == (example is None):
        raise ConfigError("give exactly one of --text and --example", 'e.g. --text "barred owl calling"')
    opened = open_bundle(bundle)
    query = text_query(opened, text, model) if text is not None else example_query(db, opened, str(example))
    where = WindowFilter(units=None if unit is None else (unit,), since=_utc_option(since, "--from"),
                         until=_utc_option(until, "--to"))
    hits = search_archive(db, opened, query, top, where, approximate=not exact, space=space, engine=engine,
                          ray_address=ray_address, ray_stall_s=ray_stall_seconds)
    for path in write_hits(hits, out, opened, clips, text if text is not None else f"like {example}"):
        stderr.print(f"wrote {path}")
    stderr.print(f"{len(hits)} hit(s); best {hits[0].score:.3f}" if hits else "no archived window matches the filter")


@logs_app.command()
@report_errors
def report(
    db: DbsOpt,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (one file, opens offline).")],
    confidence: Annotated[Path | None, typer.Option(
        "--confidence", help="confidence.json of `logs fit-confidence`: each species' curve and threshold.")] = None,
    old_confidence: Annotated[Path | None, typer.Option("--calibration", hidden=True, help="Old spelling.")] = None,
    clips: Annotated[bool, typer.Option("--clips", help="Inline top-scoring and random clips from the cards.")]
    = False,
) -> None:
    """One self-contained HTML page: effort, detections per analysed hour, species pages, unit health."""
    from desk.archive.windows import WindowStore, open_store
    from desk.report.page import ReportOptions, write_report

    con = connect_seasons(db)
    store: WindowStore | None = None
    try:
        fits = renamed(confidence, old_confidence, "--calibration", "--confidence")
        store = open_store(db) if clips else None
        result = write_report(con, out, ReportOptions(confidence=fits, clips=clips), store=store)
    finally:
        if store is not None:
            store.close()
        con.close()
    stderr.print(f"wrote {out}: {result.units} unit(s), {result.species} species, {result.detections} detections, "
                 f"{result.clips} clip(s), {result.bytes / 1e6:.2f} MB in {result.seconds:.1f} s")
