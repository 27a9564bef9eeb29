"""``biolingual-edge``: analyse recordings and run the recorder-unit daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edge.analyze import AnalyzeOptions, analyze_paths
from edge.bench import bench_command
from edge.cli_support import report_errors, setup_logging, stderr

app = typer.Typer(
    help="BioLingual on a recorder unit: zero-shot species detection from a microphone or recordings.",
    no_args_is_help=True,
    add_completion=False,
)

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
    threads: Annotated[int | None, typer.Option(help="CPU threads for inference.")] = None,
    batch: Annotated[int, typer.Option(help="Windows per inference call.")] = 4,
) -> None:
    """Detect species in recordings; writes OUT/detections.csv and one Raven selection table per file."""
    options = AnalyzeOptions(window_s=window, hop_s=hop, threshold=threshold, top_k=top_k, precision=precision,
                             score_mode=score_mode, threads=threads, batch=batch)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, transient=False) as progress:
        task = progress.add_task("analysing", total=None)

        def on_file(done: int, total: int, name: str) -> None:
            progress.update(task, completed=done, total=total, description=name[-40:])

        result = analyze_paths(paths, labels, bundle, out, options, on_file)
    for failure in result.failures:
        stderr.print(f"[bold red]error:[/] {failure}", soft_wrap=True)
    stderr.print(f"{result.files_ok} file(s) analysed, {result.detections} detection(s), "
                 f"{len(result.failures)} failed -> {result.csv_path}")
    if result.failures:
        raise typer.Exit(1)
