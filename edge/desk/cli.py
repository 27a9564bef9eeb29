"""``biolingual-edge logs``: collect SD-card logs into DuckDB, export them, summarise unit health."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli_support import report_errors, stderr
from edge.desk.collect import collect as collect_cards
from edge.desk.database import connect
from edge.desk.exports import FORMATS
from edge.desk.exports import export as export_detections
from edge.desk.summary import summarise

logs_app = typer.Typer(help="Collect SD-card logs from recorder units, export and summarise them.",
                       no_args_is_help=True, add_completion=False)

DbOpt = Annotated[Path, typer.Option("--db", help="Collection database made by `logs collect`.")]
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


@logs_app.command()
@report_errors
def collect(
    cards: Annotated[list[Path], typer.Argument(help="Card folders (the root the unit wrote its log to).")],
    into: Annotated[Path, typer.Option("--into", help="DuckDB database to create or add to.")],
    parquet: Annotated[Path | None, typer.Option("--parquet", help="Also write every table as Parquet here.")]
    = None,
    quiet_info: Annotated[bool, typer.Option("--quiet-info", help="Hide info-level findings.")] = False,
) -> None:
    """Ingest card folders (idempotent: re-collecting adds nothing) and report what needs attention."""
    result = collect_cards(cards, into, parquet, on_card=lambda card: stderr.print(f"reading {card}"))
    for finding in result.findings:
        if quiet_info and finding.severity == "info":
            continue
        style = SEVERITY_STYLE.get(finding.severity, "")
        stderr.print(f"[{style}]{finding.severity}:[/] [{finding.check}] {finding.message}", soft_wrap=True)
    added = ", ".join(f"{n} {table}" for table, n in result.added.items() if n) or "nothing new"
    errors = sum(f.severity == "error" for f in result.findings)
    warnings = sum(f.severity == "warning" for f in result.findings)
    stderr.print(f"{result.cards} card(s): {result.read.get('detections', 0)} detection rows read, added "
                 f"{added}; {errors} error(s), {warnings} warning(s) -> {into}")


@logs_app.command()
@report_errors
def export(
    db: DbOpt,
    file_format: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")],
    out: Annotated[Path, typer.Option("--out", help="File (csv, parquet) or folder (raven, audacity).")],
) -> None:
    """Export detections: tidy CSV/Parquet with provenance, Raven selection tables, Audacity labels."""
    con = connect(db, read_only=True)
    try:
        paths = export_detections(con, file_format, out)
    finally:
        con.close()
    stderr.print(f"wrote {len(paths)} file(s) -> {out}")


@logs_app.command()
@report_errors
def summary(
    db: DbOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for SUMMARY.csv and the PNG plots.")],
) -> None:
    """Per-unit health table (uptime, effort, xruns, gaps, temperature, disk) and plots."""
    con = connect(db, read_only=True)
    try:
        paths = summarise(con, out)
    finally:
        con.close()
    for path in paths:
        stderr.print(f"wrote {path}")


@logs_app.command()
@report_errors
def report(
    db: DbOpt,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (one file, opens offline).")],
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="calibration.json: show each species' calibration curve and threshold.")] = None,
    clips: Annotated[bool, typer.Option("--clips", help="Inline top-scoring and random clips from the cards.")]
    = False,
) -> None:
    """One self-contained HTML page: effort, detections per analysed hour, species pages, unit health."""
    from edge.desk.report.page import ReportOptions, write_report

    con = connect(db, read_only=True)
    try:
        result = write_report(con, out, ReportOptions(calibration=calibration, clips=clips))
    finally:
        con.close()
    stderr.print(f"wrote {out}: {result.units} unit(s), {result.species} species, {result.detections} detections, "
                 f"{result.clips} clip(s), {result.bytes / 1e6:.2f} MB in {result.seconds:.1f} s")
