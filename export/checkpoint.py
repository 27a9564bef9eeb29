"""Loading a BioLingual (CLAP, unfused HTS-AT + RoBERTa) checkpoint and reading its frontend parameters."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.model.bundle import LOCAL_REVISION_PREFIX, FrontendParams
from export.errors import ExportError

DEFAULT_MODEL = "davidrrobinson/BioLingual"
MODEL_RATE_HZ = 48_000
MODEL_MELS = 64
MODEL_N_FFT = 1024
MODEL_HOP = 480
REQUIRED_TRUNCATION = "rand_trunc"
REQUIRED_PADDING = "repeatpad"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model with its processor and the facts the bundle records about it."""

    model: Any
    """``transformers.ClapModel`` in eval mode."""
    processor: Any
    """``transformers.ClapProcessor`` (feature extractor + tokenizer)."""
    model_id: str
    revision: str
    frontend: FrontendParams

    @property
    def logit_scale(self) -> float:
        """``exp(logit_scale_a)``: the audio-text logit multiplier."""
        return float(math.exp(float(self.model.logit_scale_a.detach())))

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)


def projected(output: Any) -> Any:
    """The projected embedding tensor of ``get_audio_features`` / ``get_text_features``.

    transformers 5 returns a ``BaseModelOutputWithPooling`` (embedding in ``pooler_output``); 4.x the tensor itself.
    """
    return getattr(output, "pooler_output", output)


def frontend_params(extractor: Any) -> FrontendParams:
    """Validate an unfused CLAP feature extractor's settings and turn them into :class:`FrontendParams`."""
    problems = []
    expected = {"sampling_rate": MODEL_RATE_HZ, "feature_size": MODEL_MELS, "fft_window_size": MODEL_N_FFT,
                "hop_length": MODEL_HOP, "truncation": REQUIRED_TRUNCATION, "padding": REQUIRED_PADDING}
    for key, want in expected.items():
        have = getattr(extractor, key, None)
        if have != want:
            problems.append(f"{key}={have!r} (expected {want!r})")
    f_min, f_max = float(extractor.frequency_min), float(extractor.frequency_max)
    if not 0 <= f_min < f_max <= MODEL_RATE_HZ / 2:
        problems.append(f"frequency range {f_min}..{f_max} Hz is not within 0..{MODEL_RATE_HZ // 2} Hz")
    if problems:
        raise ExportError("preprocessor_config.json does not match an unfused BioLingual/CLAP model: "
                          + "; ".join(problems), "use the checkpoint's own preprocessor_config.json")
    return FrontendParams(sampling_rate=MODEL_RATE_HZ, n_fft=MODEL_N_FFT, hop_length=MODEL_HOP,
                          n_mels=MODEL_MELS, f_min=f_min, f_max=f_max, max_length_s=int(extractor.max_length_s),
                          padding=REQUIRED_PADDING)


def _revision(model: Any, model_id: str, requested: str | None) -> str:
    """Hub commit hash when known, else a sha256 of the local weights, else the requested revision."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return str(commit)
    local = Path(model_id)
    weights = sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin")) if local.is_dir() else []
    if weights:
        digest = hashlib.sha256()
        for path in weights:
            digest.update(path.read_bytes())
        return LOCAL_REVISION_PREFIX + digest.hexdigest()[:16]
    return requested or "unknown"


def local_folder(model_id: str) -> Path | None:
    """The absolute folder a local ``--model`` names (so bundles and hints work from anywhere); None for a hub id.

    A path that looks local but does not exist is an error at once, never a hub lookup (which retries for
    half a minute): absolute or ``./``/``~`` paths, more than one ``/``, or a first part that is a local folder.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path.resolve()
    first = model_id.replace("\\", "/").split("/")[0]
    looks_local = (path.is_absolute() or model_id.startswith((".", "~")) or "\\" in model_id
                   or model_id.count("/") > 1 or ("/" in model_id and Path(first).is_dir()))
    if looks_local:
        raise ExportError(f"checkpoint folder {path.resolve()} does not exist",
                          "pass --model with the folder the checkpoint was saved to (an absolute path works from "
                          f"anywhere) or a hub id such as {DEFAULT_MODEL}")
    return None


def load_checkpoint(model_id: str = DEFAULT_MODEL, revision: str | None = None) -> Checkpoint:
    """``ClapModel`` + ``ClapProcessor`` via ``from_pretrained`` (hub id or local folder), validated."""
    folder = local_folder(model_id)  # before importing transformers (seconds): a wrong path fails at once
    model_id = str(folder) if folder is not None else model_id
    from transformers import ClapModel, ClapProcessor

    try:
        model = ClapModel.from_pretrained(model_id, revision=revision).eval()
        processor = ClapProcessor.from_pretrained(model_id, revision=revision)
    except OSError as e:
        raise ExportError(f"cannot load checkpoint '{model_id}': {str(e).splitlines()[0]}",
                          "pass --model with a local folder made by save_pretrained, or connect to the Hub") from e
    if model.config.audio_config.enable_fusion:
        raise ExportError(f"'{model_id}' is a fused CLAP checkpoint (enable_fusion=True)",
                          "biolingual-edge exports unfused models such as davidrrobinson/BioLingual")
    return Checkpoint(model=model, processor=processor, model_id=model_id,
                      revision=_revision(model, model_id, revision),
                      frontend=frontend_params(processor.feature_extractor))
