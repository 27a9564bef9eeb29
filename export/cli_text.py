"""``biolingual-export text-onnx``: the text tower and tokenizer into a bundle, so labels need no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli_support import report_errors, stderr
from edge.scoring.text_encoder import PARITY_KEY, TEXT_PRECISIONS
from export.checkpoint import DEFAULT_MODEL, load_checkpoint

DEFAULT_PARITY_AUDIO = Path("../shared/audio")


@report_errors
def text_onnx(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder exported from the same checkpoint.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Hugging Face id or local checkpoint folder.")]
    = DEFAULT_MODEL,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")] = None,
    precision: Annotated[str, typer.Option(help=f"{' or '.join(TEXT_PRECISIONS)} (int8 also adds fp32).")] = "fp32",
    parity_audio: Annotated[Path, typer.Option(
        help="Field recordings: INT8 label rankings are compared with fp32 on their windows.")] = DEFAULT_PARITY_AUDIO,
) -> None:
    """Export the text tower (ONNX) and tokenizer.json into the bundle, checked against torch."""
    from export.text_int8 import add_text_int8
    from export.text_onnx import export_text_fp32

    if precision not in TEXT_PRECISIONS:
        raise typer.BadParameter(f"choose one of: {', '.join(TEXT_PRECISIONS)}", param_hint="--precision")
    with stderr.status(f"loading {model}"):
        checkpoint = load_checkpoint(model, revision)
    with stderr.status("exporting the text tower and checking it against torch"):
        manifest = export_text_fp32(checkpoint, bundle)
    parity = manifest.text_encoders["fp32"].details[PARITY_KEY]
    stderr.print(f"text encoder fp32 -> {bundle / manifest.text_encoders['fp32'].path}: max abs "
                 f"{parity['max_abs']:.2e} vs torch on {parity['texts']} label strings, tokenizer ids equal")
    if precision == "int8":
        with stderr.status("quantizing the text tower and comparing label rankings"):
            manifest = add_text_int8(bundle, parity_audio)
        gate = manifest.text_encoders["int8"].details[PARITY_KEY]
        stderr.print(f"text encoder int8 -> {bundle / manifest.text_encoders['int8'].path}: top-1 "
                     f"{gate['top1_agreement']:.3f}, top-5 {gate['top5_overlap']:.3f} vs fp32 on "
                     f"{gate['windows']} windows × {gate['labels']} labels")


def register(app: typer.Typer) -> None:
    """Add ``text-onnx`` to the ``biolingual-export`` app."""
    app.command("text-onnx")(text_onnx)
