"""``biolingual-export calibrate | quantize | verify | trt``: precision variants of a bundle and their proof."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli_support import report_errors, stderr
from edge.model.bundle import open_bundle
from export.errors import ExportError

TARGETS = ("ort", "trt")
DEFAULT_MAX_WINDOWS = 256
"""Windows `verify` compares at most (10 s each)."""
BundleOpt = Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder.")]


@report_errors
def calibrate(
    audio: Annotated[list[Path], typer.Option("--audio", "-a", help="Field recordings (files or folders); repeat.")],
    bundle: BundleOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for calibration.npz + calibration.json.")],
    windows: Annotated[int, typer.Option(help="Windows to select (a few hundred recommended).")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the stratified draw.")] = 0,
    batch: Annotated[int, typer.Option(help="Calibration batch size (minimum number of windows).")] = 8,
) -> None:
    """Pick representative 10 s windows (stratified by file and loudness) and store their log-mel features."""
    from calibration.dataset import build_calibration_set, save_calibration_set

    params = open_bundle(bundle).manifest.frontend
    with stderr.status("selecting windows and computing features"):
        data = build_calibration_set(audio, params, windows, seed, batch)
    save_calibration_set(data, out)
    files = len({s.file for s in data.sources})
    stderr.print(f"{len(data)} calibration windows from {files} file(s) -> {out}")


@report_errors
def quantize(
    bundle: BundleOpt,
    calibration: Annotated[Path | None, typer.Option(help="Folder made by `calibrate` (needed for int8).")] = None,
    precision: Annotated[str, typer.Option(help="int8 or fp16.")] = "int8",
    target: Annotated[str, typer.Option(help="ort (uint8 activations, CPU) or trt (symmetric int8).")] = "ort",
    keep_fp32: Annotated[str, typer.Option(
        help="Comma-separated node groups kept fp32: patch_embed, head, softmax, attention ('' for none).")] = "head",
    method: Annotated[str, typer.Option(help="Calibration method: minmax or percentile.")] = "minmax",
    verify_audio: Annotated[list[Path] | None, typer.Option(
        "--verify-audio", help="Recordings NOT used for calibration: run `verify` on them right away.")] = None,
) -> None:
    """Add an FP16 or calibrated INT8 (explicit Q/DQ) encoder to the bundle with its parity numbers.

    analyze/run accept the new model once `verify` has passed it: pass --verify-audio to do that here.
    """
    from calibration.dataset import load_calibration_set
    from export.quantize import QuantizeOptions, add_precision, model_key

    key = model_key(precision, target)
    if target not in TARGETS:
        raise ExportError(f"unknown --target '{target}'", f"use --target {' or '.join(TARGETS)}")

    options = QuantizeOptions(precision=precision, target=target, calibration_method=method,
                              keep_fp32=tuple(g.strip() for g in keep_fp32.split(",") if g.strip()))
    data = load_calibration_set(calibration) if calibration is not None else None
    with stderr.status(f"building {model_key(precision, target)}"):
        entry = add_precision(bundle, data, options)
    parity = entry.details.get("parity_vs_fp32", {})
    numbers = (f": centred cosine {parity['mean_centred_cosine']:.5f}, top-1 {parity['top1_agreement']}"
               if parity else "")
    stderr.print(f"{key} -> {bundle / entry.path}{numbers}")
    if not verify_audio:
        stderr.print(f"next: `biolingual-export verify --bundle {bundle} --audio HELD_OUT_RECORDINGS` (analyze and "
                     f"run use {key} only once it passes there)", soft_wrap=True)
        return
    _verify_and_report(bundle, verify_audio, None, DEFAULT_MAX_WINDOWS)


@report_errors
def verify(
    bundle: BundleOpt,
    audio: Annotated[list[Path], typer.Option("--audio", "-a", help="Recordings NOT used for calibration.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint for the torch stage.")] = None,
    max_windows: Annotated[int, typer.Option(help="At most this many 10 s windows.")] = DEFAULT_MAX_WINDOWS,
) -> None:
    """Compare every model of the bundle stage by stage; writes parity.json (checked by analyze/run)."""
    _verify_and_report(bundle, audio, model, max_windows)


def _verify_and_report(bundle: Path, audio: list[Path], model: str | None, max_windows: int) -> None:
    from export.verify import verify_bundle

    with stderr.status("verifying"):
        results = verify_bundle(bundle, audio, model, max_windows)
    for r in results:
        f = r.fidelity
        numbers = (f"centred cosine {f.mean_centred_cosine:.5f}, top-1 {f.top1_agreement}, max abs {f.max_abs:.2e}"
                   if f else r.note)
        stderr.print(f"{'PASS' if r.passed else 'FAIL'} {r.stage}: {numbers}")
    if not all(r.passed for r in results):
        stderr.print("[yellow]hint:[/] a failed model stays refused by analyze/run: re-quantize it (more calibration "
                     "windows, more --keep-fp32 groups) or use a precision that passed", soft_wrap=True)
        raise typer.Exit(1)


@report_errors
def trt(
    bundle: BundleOpt,
    precision: Annotated[str, typer.Option(help="fp16, int8 (from int8-trt) or fp32.")] = "fp16",
    max_batch: Annotated[int, typer.Option(help="Largest batch of the optimisation profile.")] = 8,
    opt_batch: Annotated[int, typer.Option(help="Batch the profile is tuned for (the daemon mostly runs 1).")] = 1,
    workspace_mb: Annotated[int, typer.Option(help="Builder workspace limit in MiB.")] = 1024,
    timing_cache: Annotated[Path | None, typer.Option(
        help="Folder of timing caches, one per GPU and TensorRT version (default: trt_timing/ in the bundle).")]
    = None,
) -> None:
    """Build a strongly typed TensorRT engine on this machine (run it on the Jetson)."""
    from export.trt_build import TrtBuildOptions, build_engine

    options = TrtBuildOptions(precision, max_batch, workspace_mb, timing_cache, opt_batch=opt_batch)
    with stderr.status(f"building the {precision} engine"):
        entry = build_engine(bundle, options)
    stderr.print(f"engine {bundle / entry.path} (TensorRT {entry.details['tensorrt_version']}, "
                 f"{entry.details['gpu_name']})")


def register(app: typer.Typer) -> None:
    """Add the precision commands to the ``biolingual-export`` app."""
    for command in (calibrate, quantize, verify, trt):
        app.command()(command)
