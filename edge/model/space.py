"""One embedding space from unit to desk: the identity of the audio tower that windows, label sets, confidence
fits and heads live in.

A space is named by the sha256 of the bundle's fp32 audio encoder ONNX (:attr:`Manifest.embedding_space`); the
FP16 and INT8 ONNX files and TensorRT engines of the same export compute embeddings in that same space, so a
window from any of them records the fp32 identity. Everything that mixes two of these things checks that
their spaces agree with :func:`check_space` and refuses a mismatch in one line naming both.
"""

from __future__ import annotations

from edge.errors import BundleError
from edge.model.bundle import SPACE_PRECISION, Bundle

SPACE_PREFIX_CHARS = 12
"""Hex digits of a space shown in messages and tables."""


def recorded_space(bundle: Bundle) -> str:
    """The bundle's embedding space: its manifest's, else (older bundles) its fp32 audio encoder's sha256, else
    ``""`` (a bundle that names none; what a unit records then, mapped at the desk by model sha)."""
    manifest = bundle.manifest
    fp32 = manifest.models.get(SPACE_PRECISION)
    return manifest.embedding_space or (manifest.files.get(fp32.path, "") if fp32 is not None else "")


def embedding_space(bundle: Bundle) -> str:
    """The bundle's embedding space (:func:`recorded_space`); a bundle that names none is refused."""
    space = recorded_space(bundle)
    if not space:
        raise BundleError(f"bundle {bundle.root} names no embedding space (no embedding_space in its manifest and "
                          "no fp32 audio encoder)", "re-export the bundle with `biolingual-export onnx`")
    return space


def space_of_model(bundle: Bundle, model_sha256: str) -> str | None:
    """The bundle's space when ``model_sha256`` is one of its audio encoders (any precision or engine), else
    None: how windows recorded before spaces were named are mapped."""
    shas = {manifest_sha for m in bundle.manifest.models.values()
            if (manifest_sha := bundle.manifest.files.get(m.path))}
    return embedding_space(bundle) if model_sha256 in shas else None


def short_space(space: str) -> str:
    """How a space is named in messages (its first 12 hex digits; ``--space`` takes any unique prefix)."""
    return space[:SPACE_PREFIX_CHARS] if space else "(none recorded)"


def check_space(what: str, space: str, bundle: Bundle, fix: str) -> None:
    """Refuse ``what`` (in ``space``) for use with ``bundle`` unless both are in the same embedding space; an
    empty ``space`` (nothing recorded) is refused too."""
    expected = embedding_space(bundle)
    if space != expected:
        raise BundleError(f"{what} is in embedding space {short_space(space)}, bundle {bundle.root} "
                          f"({bundle.manifest.model_id}) is space {short_space(expected)}", fix)
