"""``logs review / fit-confidence / train-head``: from raw scores to reviewed, fitted detections and trained heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli_support import renamed_command, report_errors, stderr
from edge.errors import ConfigError

DbsOpt = Annotated[list[Path], typer.Option("--db", help="Season database made by `logs collect` (with embeddings); "
                                                         "repeat it to review several (years, sites) as one.")]
BundleOpt = Annotated[Path, typer.Option("--bundle", "-b", help="Model bundle the archive was analysed with.")]


def _targets(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise ConfigError(f"--target-precision '{text}' is not a comma-separated list of numbers",
                          "e.g. --target-precision 0.9,0.95") from e


def register(app: typer.Typer) -> None:
    """Add the review commands to the ``logs`` app."""

    @app.command()
    @report_errors
    def review(
        db: DbsOpt,
        bundle: BundleOpt,
        labels: Annotated[Path, typer.Option("--labels", "-l", help="Species list to review.")],
        out: Annotated[Path, typer.Option("--out", help="Folder for review.csv and review.html.")],
        per_label: Annotated[int, typer.Option("--per-label", help="Windows to review per label.")] = 40,
        bins: Annotated[int, typer.Option(help="Score bins the sample is spread across.")] = 5,
        seed: Annotated[int, typer.Option(help="Random seed of the sample.")] = 0,
        detections: Annotated[bool, typer.Option(
            "--detections", help="Review the units' own detections (across units) instead of sampled windows.")]
        = False,
        space: Annotated[str | None, typer.Option("--space", help="The archive's embedding space to review (a "
                                                  "prefix; needed when it holds several).")] = None,
    ) -> None:
        """Sample archived windows (or the units' detections) per label across score bins; review them by ear in
        review.html."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from desk.review.detections import detections_for_review
        from desk.review.page import sample_for_review, write_review_csv, write_review_page
        from edge.model.bundle import open_bundle
        from edge.model.space import embedding_space
        from edge.scoring.labels import read_labels

        if per_label < 1 or bins < 1:
            raise ConfigError("--per-label and --bins must be at least 1", "pass positive integers")
        opened = open_bundle(bundle)
        label_list = read_labels(labels)
        if detections:
            items, missing = detections_for_review(db, opened, label_list, labels, per_label, bins, seed, space)
            if missing:
                stderr.print(f"warning: {missing} detection(s) have no archived window (embeddings off or not "
                             "collected); they cannot be reviewed")
        else:
            items = sample_for_review(db, opened, label_list, labels, per_label, bins, seed, space)
        out.mkdir(parents=True, exist_ok=True)
        sha = embedding_space(opened)
        write_review_csv(out / "review.csv", items, label_list.key, sha)
        with Progress(TextColumn("cutting audio"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=stderr, transient=True) as progress:
            task = progress.add_task("review", total=len(items))
            write_review_page(out / "review.html", items, label_list.key, sha,
                              lambda done, total: progress.update(task, completed=done))
        stderr.print(f"{len(items)} window(s) to review -> {out / 'review.html'} (download the filled review.csv, "
                     f"then `biolingual-edge logs fit-confidence --review review.csv --out confidence.json`)")

    @app.command()
    @report_errors
    def fit_confidence(
        review_csv: Annotated[Path, typer.Option("--review", help="review.csv with verdicts (yes/no/unsure).")],
        out: Annotated[Path, typer.Option("--out", help="confidence.json to write.")],
        target_precision: Annotated[str, typer.Option("--target-precision",
                                                      help="Comma-separated target precisions.")] = "0.9,0.95",
        install: Annotated[Path | None, typer.Option("--install", help="Also put the thresholds into this bundle.")]
        = None,
        use: Annotated[str | None, typer.Option("--use", help="Target precision the unit applies (default: lowest).")]
        = None,
        bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates for the threshold intervals.")] = 1000,
    ) -> None:
        """Fit P(correct | score) per label and the score threshold for each target precision."""
        from desk.review.confidence import fit_confidence as fit
        from desk.review.confidence import install_confidence, read_review, require_fitted, write_json_atomic

        result = fit(read_review(review_csv), _targets(target_precision), replicates=max(1, bootstrap))
        require_fitted(result)
        write_json_atomic(out, result)
        for name, entry in result["labels"].items():
            if entry["fitted"]:
                shown = ", ".join(f"{t}: {v['score']:.3g} [{v['ci'][0]:.3g}, {v['ci'][1]:.3g}]"
                                  for t, v in entry["thresholds"].items())
                stderr.print(f"{name}: {entry['n_yes']} yes / {entry['n_no']} no -> thresholds {shown}")
            else:
                stderr.print(f"[yellow]{name}: not fitted[/] ({entry['reason']})")
        stderr.print(f"wrote {out}")
        if install is not None:
            path = install_confidence(install, result, use)
            stderr.print(f"installed -> {path}")

    app.command("calibrate", hidden=True)(renamed_command(fit_confidence, "logs calibrate", "logs fit-confidence"))

    @app.command("train-head")
    @report_errors
    def train_head(
        db: Annotated[list[Path], typer.Option("--db", help="Season database made by `logs collect` (with "
                                               "embeddings) that the review was made on; repeat it for a review "
                                               "of several, in any order.")],
        review_csv: Annotated[Path, typer.Option("--review", help="review.csv with verdicts.")],
        bundle: BundleOpt,
        name: Annotated[str, typer.Option("--name", help=(
            "Name of the head in the bundle; choose it with --head NAME on `run`, `analyze` and `logs rescore` "
            "(or analysis.heads: NAME in a unit config's list)."))],
        examples: Annotated[Path | None, typer.Option("--examples",
                                                      help="Folder of DIR/<label>/*.wav positives.")] = None,
        space: Annotated[str | None, typer.Option("--space", help="The archive's embedding space to train in (a "
                                                  "prefix; needed when it holds several).")] = None,
    ) -> None:
        """Train a logistic head per label on archived embeddings; store it in the bundle for the units."""
        from desk.review.train_head import install_head, review_provenance, train_heads, training_sets
        from edge.model.bundle import open_bundle

        opened = open_bundle(bundle)
        fits, skipped = train_heads(training_sets(db, opened, review_csv, examples, space), opened)
        for label, reason in skipped.items():
            stderr.print(f"[yellow]{label}: no head[/] ({reason})")
        path = install_head(opened, name, fits, review_provenance(review_csv, examples, db))
        for fit in fits:
            zero = "n/a" if fit.ap_zero_shot is None else f"{fit.ap_zero_shot:.3f}"
            stderr.print(f"{fit.label}: {fit.positives} pos / {fit.negatives} neg, {fit.folds}-fold AP head "
                         f"{fit.ap_head:.3f} vs zero-shot {zero}")
        stderr.print(f"head '{name}' -> {path} (use it with `--head {name}` on run, analyze or logs rescore)")
