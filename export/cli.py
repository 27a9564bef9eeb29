"""``biolingual-export``: build and extend model bundles on the workstation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.bundle import open_bundle
from edge.cli_support import report_errors, setup_logging, stderr
from edge.labels import read_labels
from export.checkpoint import DEFAULT_MODEL, load_checkpoint
from export.labels import DEFAULT_TEMPLATE, check_same_model, example_embeddings, store_label_set, text_embeddings
from export.onnx_bundle import export_fp32_bundle

app = typer.Typer(help="Turn a BioLingual checkpoint into a bundle for recorder units.", no_args_is_help=True,
                  add_completion=False)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hugging Face id or local checkpoint folder.")]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")]
DEFAULT_PARITY_AUDIO = Path("../shared/audio")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False) -> None:
    """Export the audio tower to ONNX, precompute label embeddings, build precision variants."""
    setup_logging(verbose)


@app.command()
@report_errors
def onnx(
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to create.")],
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    parity_audio: Annotated[Path, typer.Option(help="Field recordings for the torch-vs-ONNX parity check.")]
    = DEFAULT_PARITY_AUDIO,
) -> None:
    """Export the audio tower to ONNX (fp32, dynamic batch), write manifest.json and parity.json."""
    with stderr.status(f"loading {model}"):
        checkpoint = load_checkpoint(model, revision)
    with stderr.status("exporting the audio tower and checking parity against torch"):
        manifest = export_fp32_bundle(checkpoint, out, parity_audio)
    stderr.print(f"bundle {out}: fp32 ONNX opset {manifest.models['fp32'].opset}, "
                 f"embedding dim {manifest.embedding_dim}, parity passed")


@app.command()
@report_errors
def labels(
    labels: Annotated[Path, typer.Option("--labels", "-l", help="Species list, one label per line.")],
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder to add the labels to.")],
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    template: Annotated[list[str] | None, typer.Option(
        help="Prompt template with {common}/{scientific}; repeat to average several.")] = None,
    examples: Annotated[Path | None, typer.Option(
        help="Folder with one sub-folder of example recordings per label (EXAMPLES/<label>/*.wav).")] = None,
) -> None:
    """Precompute label embeddings so the unit never runs the text tower."""
    label_list = read_labels(labels)
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
        embeddings = text_embeddings(checkpoint, label_list, templates)
        manifest = store_label_set(opened, label_list, embeddings, "text", templates)
    stderr.print(f"{len(label_list.names)} label(s) stored as {manifest.label_sets[label_list.key].path}")


@app.command("random-checkpoint")
@report_errors
def random_checkpoint(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the checkpoint to.")],
    size: Annotated[str, typer.Option(help="tiny (tests) or full (BioLingual architecture, for benchmarks).")]
    = "tiny",
    seed: Annotated[int, typer.Option(help="Random seed for the weights.")] = 0,
) -> None:
    """Write a random-weight BioLingual-shaped checkpoint (for trying the tools without the real weights)."""
    from export.synthetic import build_checkpoint

    with stderr.status(f"building a {size} random checkpoint"):
        build_checkpoint(out, size, seed)
    stderr.print(f"random {size} checkpoint written to {out} (its detections are meaningless)")


from export.cli_precision import register as register_precision_commands  # noqa: E402

register_precision_commands(app)

from export.cli_text import register as register_text_commands  # noqa: E402

register_text_commands(app)
