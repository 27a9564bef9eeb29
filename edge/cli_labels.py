"""``biolingual-edge labels add``: new label embeddings from the bundle's text tower, on the unit or at the desk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli_support import report_errors, stderr
from edge.model.bundle import open_bundle
from edge.scoring.label_sets import DEFAULT_TEMPLATE, store_text_labels
from edge.scoring.labels import read_labels
from edge.scoring.text_encoder import TEXT_PRECISIONS, TextEncoder

labels_app = typer.Typer(help="Label sets of a bundle: add species without the workstation.", no_args_is_help=True)


@labels_app.command("add")
@report_errors
def labels_add(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder with a text encoder.")],
    labels: Annotated[Path, typer.Option("--labels", "-l", help="Species list, one label per line.")],
    template: Annotated[list[str] | None, typer.Option(
        help="Prompt template with {common}/{scientific}; repeat to average several.")] = None,
    precision: Annotated[str, typer.Option(help=f"Text encoder precision: {', '.join(TEXT_PRECISIONS)}.")] = "fp32",
    threads: Annotated[int | None, typer.Option(help="CPU threads for the text encoder.")] = None,
    force_precision: Annotated[bool, typer.Option(
        help="Use an int8 text encoder that has not passed its gate against fp32.")] = False,
) -> None:
    """Embed a label list with the bundle's ONNX text tower (no torch) and store it like `biolingual-export labels`."""
    label_list = read_labels(labels)
    opened = open_bundle(bundle)
    templates = tuple(template or [DEFAULT_TEMPLATE])
    encoder = TextEncoder.from_bundle(opened, precision, threads, force_precision)
    with stderr.status(f"embedding {len(label_list.names)} label(s) × {len(templates)} template(s)"):
        manifest, prompts_added = store_text_labels(opened, label_list, encoder, templates)
    if prompts_added is not None:
        stderr.print(f"the hardware profiles' prompts ({', '.join(prompts_added.names)}) stored as "
                     f"{manifest.label_sets[prompts_added.key].path}")
    stderr.print(f"{len(label_list.names)} label(s) stored as {manifest.label_sets[label_list.key].path} "
                 f"({precision} text encoder)")
