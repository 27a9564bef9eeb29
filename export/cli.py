"""``biolingual-export``: build and extend model bundles on the workstation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli_support import report_errors, setup_logging, stderr
from edge.errors import LabelError
from edge.model.bundle import open_bundle
from edge.scoring.label_sets import store_text_labels
from edge.scoring.labels import labels_from_folders, read_labels
from export.checkpoint import DEFAULT_MODEL, load_checkpoint
from export.errors import ExportError
from export.labels import DEFAULT_TEMPLATE, TorchTextEmbedder, check_same_model, example_embeddings, store_label_set
from export.onnx_bundle import export_fp32_bundle
from export.parity import PARITY_BATCHES
from export.staging import check_new_folder, staged_folder, window_count

app = typer.Typer(help="Turn a BioLingual checkpoint into a bundle for recorder units.", no_args_is_help=True,
                  add_completion=False)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hugging Face id or local checkpoint folder.")]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")]
PARITY_WINDOW_S = 10.0
"""Seconds of audio per parity window (the model's window)."""


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False) -> None:
    """Export the audio tower to ONNX, precompute label embeddings, build precision variants."""
    setup_logging(verbose)


@app.command()
@report_errors
def onnx(
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to create.")],
    parity_audio: Annotated[Path | None, typer.Option(
        help="Field recordings (a folder: 12 windows of 10 s or more) for the torch-vs-ONNX parity check.")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle at --out.")] = False,
) -> None:
    """Export the audio tower to ONNX (fp32, dynamic batch), write manifest.json and parity.json."""
    audio = check_parity_audio(parity_audio)
    check_new_folder(out, overwrite)
    with stderr.status(f"loading {model}"):
        checkpoint = load_checkpoint(model, revision)
    with stderr.status("exporting the audio tower and checking parity against torch"), staged_folder(out) as staging:
        manifest = export_fp32_bundle(checkpoint, staging, audio)
    stderr.print(f"bundle {out}: fp32 ONNX opset {manifest.models['fp32'].opset}, "
                 f"embedding dim {manifest.embedding_dim}, parity passed")


def check_parity_audio(parity_audio: Path | None) -> Path:
    """Before the slow export: the parity recordings exist and hold enough audio (headers only)."""
    if parity_audio is None:
        raise ExportError("no recordings for the parity check",
                          "pass --parity-audio DIR: a folder of field recordings (WAV/FLAC), two minutes or more")
    if not parity_audio.exists():
        raise ExportError(f"--parity-audio {parity_audio} does not exist", "pass a folder of field recordings")
    needed = sum(PARITY_BATCHES)
    have = window_count([parity_audio], PARITY_WINDOW_S)
    if have < needed:
        raise ExportError(f"--parity-audio {parity_audio} holds {have} window(s) of {PARITY_WINDOW_S:g} s of "
                          f"readable audio, the parity check needs {needed}", "add more field recordings to it")
    return parity_audio


@app.command()
@report_errors
def labels(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder to add the labels to.")],
    labels: Annotated[Path | None, typer.Option(
        "--labels", "-l", help="Species list, one label per line (optional with --examples).")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    template: Annotated[list[str] | None, typer.Option(
        help="Prompt template with {common}/{scientific}; repeat to average several.")] = None,
    examples: Annotated[Path | None, typer.Option(
        help="Folder with one sub-folder of example recordings per label (EXAMPLES/<label>/*.wav); "
             "without --labels the sub-folder names are the labels.")] = None,
) -> None:
    """Precompute label embeddings so the unit never runs the text tower."""
    if labels is not None:
        label_list = read_labels(labels)
    elif examples is not None:
        label_list = labels_from_folders(examples)
    else:
        raise LabelError("no labels given", "pass --labels FILE (one species per line) or --examples DIR")
    opened = open_bundle(bundle)
    if examples is not None:
        with stderr.status("embedding example recordings"):
            embeddings = example_embeddings(opened, label_list, examples)
        manifest = store_label_set(opened, label_list, embeddings, "examples", ())
    else:
        templates = tuple(template or [DEFAULT_TEMPLATE])
        with stderr.status(f"loading {model}"):
            checkpoint = load_checkpoint(model, revision)
        check_same_model(opened, checkpoint)
        manifest, prompts_added = store_text_labels(opened, label_list, TorchTextEmbedder(checkpoint), templates)
        if prompts_added is not None:
            stderr.print(f"the hardware profiles' prompts ({', '.join(prompts_added.names)}) stored as "
                         f"{manifest.label_sets[prompts_added.key].path}")
    names = ", ".join(label_list.names[:5]) + (" …" if len(label_list.names) > 5 else "")
    stderr.print(f"{len(label_list.names)} label(s) ({names}) stored as {manifest.label_sets[label_list.key].path}")


@app.command("random-checkpoint")
@report_errors
def random_checkpoint(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the checkpoint to.")],
    size: Annotated[str, typer.Option(
        help="tiny (tests), swin (two blocks per stage) or full (BioLingual architecture, benchmarks).")] = "tiny",
    seed: Annotated[int, typer.Option(help="Random seed for the weights.")] = 0,
) -> None:
    """Write a random-weight BioLingual-shaped checkpoint (for trying the tools without the real weights)."""
    from export.synthetic import SIZES, build_checkpoint

    if size not in SIZES:
        raise ExportError(f"unknown checkpoint size '{size}'", f"use --size {', '.join(SIZES)}")
    with stderr.status(f"building a {size} random checkpoint"):
        build_checkpoint(out, size, seed)
    stderr.print(f"random {size} checkpoint written to {out} (its detections are meaningless)")


from export.cli_precision import register as register_precision_commands  # noqa: E402

register_precision_commands(app)

from export.cli_text import register as register_text_commands  # noqa: E402

register_text_commands(app)
