"""The bundle: the one folder that ``export`` hands to ``edge`` (manifest.json + the files it lists + sha256)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge import durable
from edge.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
PARITY_FILE = "parity.json"
"""Stage-by-stage agreement report written by the exporter; checksummed like every other file."""
HASH_CHUNK_BYTES = 1 << 20
LOCAL_REVISION_PREFIX = "sha256:"
"""``model_revision`` of a local checkpoint: this prefix + a content hash of its weights (hub models: the commit)."""
TRT_PREFIX = "trt-"
TRT_PRECISIONS = ("fp32", "fp16", "int8")
SPACE_PRECISION = "fp32"
"""The model whose sha256 names the bundle's embedding space (every other precision maps into it)."""
ORT_OPTIMIZED_KEY = "ort_optimized"
"""Key in a model entry's ``details``: the ONNX Runtime-only optimised graph of that model (path, ORT version)."""


@dataclass(frozen=True)
class FrontendParams:
    """Log-mel parameters read from the checkpoint's ``preprocessor_config.json``."""

    sampling_rate: int
    """Model input rate in Hz (48 000 for BioLingual)."""
    n_fft: int
    """FFT and Hann window length in samples."""
    hop_length: int
    """STFT hop in samples (480 = 10 ms at 48 kHz)."""
    n_mels: int
    """Number of mel bands."""
    f_min: float
    """Lowest mel band edge in Hz."""
    f_max: float
    """Highest mel band edge in Hz."""
    max_length_s: int
    """Model window length in seconds."""
    padding: str = "repeatpad"
    """How clips shorter than a window are filled: ``repeatpad`` tiles the clip, then zero-pads."""
    mel_scale: str = "slaney"
    mel_norm: str = "slaney"

    @property
    def window_samples(self) -> int:
        """Samples in one model window (480 000)."""
        return self.sampling_rate * self.max_length_s

    @property
    def n_frames(self) -> int:
        """STFT frames in one window with centre padding (1001)."""
        return self.window_samples // self.hop_length + 1


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or a string for a dynamic axis) and dtype of one model input or output."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class ModelEntry:
    """One exported audio encoder file of the bundle."""

    path: str
    precision: str
    """``fp32``, ``fp16``, ``int8`` …"""
    runtime: str
    """``onnxruntime`` or ``tensorrt``."""
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Runtime-specific facts: TensorRT version, GPU, parity numbers …"""


@dataclass(frozen=True)
class LabelSetEntry:
    """Embeddings for one label list, stored as ``labels/<key>.npz``."""

    key: str
    path: str
    names: tuple[str, ...]
    source: str
    """``text`` (prompt templates through the text tower) or ``examples`` (mean audio embedding)."""
    templates: tuple[str, ...] = ()
    scientific_names: tuple[str, ...] = ()
    model_revision: str = ""
    """Content hash (revision) of the checkpoint that computed the embeddings; ``""`` in older bundles."""
    embedding_space: str = ""
    """The bundle's :attr:`Manifest.embedding_space` when the set was stored; ``""`` in older bundles."""


@dataclass(frozen=True)
class Manifest:
    """Everything ``edge`` needs to know about a bundle, and the checksums that prove it is intact."""

    model_id: str
    model_revision: str
    frontend: FrontendParams
    embedding_dim: int
    logit_scale: float
    """``exp(logit_scale_a)``: multiplies the cosine to give the model's audio-text logit."""
    models: dict[str, ModelEntry] = field(default_factory=dict)
    label_sets: dict[str, LabelSetEntry] = field(default_factory=dict)
    text_encoders: dict[str, ModelEntry] = field(default_factory=dict)
    """Text tower ONNX files by precision (``fp32``, ``int8``): labels are added without torch."""
    tokenizer: str = ""
    """Path of the checkpoint's ``tokenizer.json`` (``""``: no text tower in the bundle)."""
    files: dict[str, str] = field(default_factory=dict)
    """Relative path -> sha256 of every file the manifest refers to."""
    tool_versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    embedding_space: str = ""
    """The audio tower's identity: sha256 of the fp32 ONNX it was exported as (from ``model_id`` at
    ``model_revision``). Every precision and engine of the bundle maps windows into this one space; ``""`` in
    older bundles (then derived from the fp32 file, see :func:`embedding_space`)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        def tensors(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in items)

        def model_entries(items: dict[str, dict[str, Any]]) -> dict[str, ModelEntry]:
            return {key: ModelEntry(path=m["path"], precision=m["precision"], runtime=m["runtime"],
                                    inputs=tensors(m["inputs"]), outputs=tensors(m["outputs"]),
                                    opset=m.get("opset"), details=m.get("details", {}))
                    for key, m in items.items()}

        models = model_entries(raw.get("models", {}))
        label_sets = {
            key: LabelSetEntry(
                key=s["key"],
                path=s["path"],
                names=tuple(s["names"]),
                source=s["source"],
                templates=tuple(s.get("templates", ())),
                scientific_names=tuple(s.get("scientific_names", ())),
                model_revision=s.get("model_revision", ""),
                embedding_space=s.get("embedding_space", ""),
            )
            for key, s in raw.get("label_sets", {}).items()
        }
        return cls(
            model_id=raw["model_id"],
            model_revision=raw["model_revision"],
            frontend=FrontendParams(**raw["frontend"]),
            embedding_dim=int(raw["embedding_dim"]),
            logit_scale=float(raw["logit_scale"]),
            models=models,
            label_sets=label_sets,
            text_encoders=model_entries(raw.get("text_encoders", {})),
            tokenizer=raw.get("tokenizer", ""),
            files=dict(raw.get("files", {})),
            tool_versions=dict(raw.get("tool_versions", {})),
            schema_version=int(raw["schema_version"]),
            embedding_space=str(raw.get("embedding_space", "")),
        )


FileStamp = tuple[int, int, int, int]
"""A file's size, modification and status-change times (ns) and inode: any write, or a copy put in its place,
changes it (``touch -r`` restores the modification time, not the status-change time)."""


def file_stamp(path: Path) -> FileStamp | None:
    """``path``'s :data:`FileStamp`, None when it cannot be read."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Manifest:
    """Recompute the checksum of every referenced file and write ``manifest.json`` atomically and durably.

    The manifest names the embedding space (the fp32 audio encoder's sha256) once it has an fp32 model; a
    bundle that carries only other precisions keeps the space it was exported with.
    """
    referenced = [m.path for m in manifest.models.values()] + [s.path for s in manifest.label_sets.values()]
    referenced += [m.path for m in manifest.text_encoders.values()]
    referenced += [manifest.tokenizer] if manifest.tokenizer else []
    known = [*manifest.files, PARITY_FILE]
    extra = [p for p in known if p not in referenced and (bundle_dir / p).exists()]
    files = {rel: sha256_file(bundle_dir / rel) for rel in sorted(set(referenced + extra))}
    fp32 = manifest.models.get(SPACE_PRECISION)
    space = files.get(fp32.path, "") if fp32 is not None else manifest.embedding_space
    manifest = dataclasses.replace(manifest, files=files, embedding_space=space)
    # the files the manifest vouches for, and their folder entries, reach the disk before the manifest does
    folders = {bundle_dir}
    for rel in files:
        durable.fsync_path(bundle_dir / rel)
        folders.update(p for p in (bundle_dir / rel).parents if p.is_relative_to(bundle_dir))
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        durable.fsync_path(folder)
    durable.atomic_write(bundle_dir / MANIFEST_NAME, manifest.to_json().encode("utf-8"))
    return manifest


def read_manifest(bundle_dir: Path) -> Manifest:
    """Parse ``manifest.json`` without checking file checksums."""
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(
            f"no bundle at {bundle_dir}: {MANIFEST_NAME} is missing",
            "export one with `biolingual-export onnx --out DIR` or pass --bundle DIR",
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e})", "re-export the bundle") from e
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {bundle_dir} has schema version {version}, this runtime reads {SCHEMA_VERSION}",
            "re-export the bundle with the biolingual-export that matches this runtime",
        )
    try:
        return Manifest.from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{path} is incomplete ({e!r})", "re-export the bundle") from e


def verify_file(bundle_dir: Path, rel: str, expected: str) -> None:
    """Raise :class:`BundleError` when ``rel`` is missing or its sha256 is not ``expected``."""
    path = bundle_dir / rel
    if not path.is_file():
        raise BundleError(f"bundle file {path} is missing", "copy the whole bundle folder again")
    if sha256_file(path) != expected:
        raise BundleError(
            f"bundle file {path} is corrupted (sha256 does not match manifest.json)",
            "copy the bundle again from the workstation",
        )


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Raise :class:`BundleError` naming the first file that is missing or whose sha256 differs."""
    for rel, expected in manifest.files.items():
        verify_file(bundle_dir, rel, expected)


@dataclass(frozen=True)
class Bundle:
    """An opened bundle folder and its manifest.

    Read a bundle file through :meth:`path`: a bundle opened with ``verify="on_read"`` checks each file's
    sha256 the first time it is asked for, so a run hashes what it loads and not every precision's model.
    """

    root: Path
    manifest: Manifest
    verify_on_read: bool = False
    """Files are checked one by one in :meth:`path` (else they were all checked when the bundle was opened,
    or not at all)."""
    trusted: dict[str, FileStamp] = field(default_factory=dict, compare=False, repr=False)
    """Files another process verified (:meth:`stamps`): one still carrying its stamp is not hashed again."""
    _checked: dict[str, FileStamp | None] = field(default_factory=dict, compare=False, repr=False)

    def path(self, rel: str) -> Path:
        """The path of bundle file ``rel``, to read; its checksum verified first if not done yet."""
        if self.verify_on_read:
            self._verify(rel)
        return self.root / rel

    def check_model(self, precision: str) -> None:
        """Verify now the files a backend may load for ``precision`` (the export and its ORT-optimised graph),
        for workers that open the bundle unchecked or trust :meth:`stamps`; a file this bundle already checked is
        not hashed again."""
        entry = self.model(precision)
        for rel in (entry.path, entry.details.get(ORT_OPTIMIZED_KEY, {}).get("path")):
            if rel is not None:
                self._verify(rel)

    def stamps(self) -> dict[str, FileStamp]:
        """The files this process verified, each with its stamp as it was hashed: pass them to workers as
        ``open_bundle(..., trusted=...)`` so that they skip hashing what is unchanged since."""
        return {rel: stamp for rel, stamp in self._checked.items() if stamp is not None}

    def _verify(self, rel: str) -> None:
        """Check ``rel``'s sha256 against the manifest once per opened bundle (files it does not list: nothing),
        unless it still has the stamp another process verified it with (:attr:`trusted`)."""
        if rel in self._checked or rel not in self.manifest.files:
            return
        path = self.root / rel
        before = file_stamp(path)
        if before is not None and self.trusted.get(rel) == before:
            self._checked[rel] = before  # verified by the process that handed the stamp over; unchanged since
            return
        verify_file(self.root, rel, self.manifest.files[rel])
        self._checked[rel] = before if file_stamp(path) == before else None  # changed while hashed: no stamp

    def model(self, precision: str) -> ModelEntry:
        """The model entry for a precision, or a :class:`BundleError` listing the ones present."""
        entry = self.manifest.models.get(precision)
        if entry is None:
            have = ", ".join(sorted(self.manifest.models)) or "none"
            raise BundleError(f"bundle {self.root} has no {precision} model (it has: {have})",
                              self._how_to_make(precision, have))
        return entry


    def _how_to_make(self, precision: str, have: str) -> str:
        root = self.root
        if precision == "fp32":
            return f"export it with `biolingual-export onnx --out {root} --parity-audio DIR`"
        if precision == "fp16":
            return f"create it with `biolingual-export quantize --bundle {root} --precision fp16`"
        if precision in ("int8", "int8-trt"):
            target = "trt" if precision == "int8-trt" else "ort"
            return (f"calibrate, then `biolingual-export quantize --bundle {root} --calibration CALIB "
                    f"--precision int8 --target {target}`")
        engine = precision.removeprefix(TRT_PREFIX)
        if precision.startswith(TRT_PREFIX) and engine in TRT_PRECISIONS:
            return f"build it on the device: `biolingual-export trt --bundle {root} --precision {engine}`"
        return f"'{precision}' is not a precision; choose one the bundle has: {have}"


def open_bundle(bundle_dir: Path | str, verify: bool | Literal["on_read"] = True,
                trusted: dict[str, FileStamp] | None = None) -> Bundle:
    """Read a bundle's manifest and verify every file's checksum now (``True``), each file when it is first
    read through :meth:`Bundle.path` (``"on_read"``: what a run loads, at start-up), or not at all. With
    ``"on_read"``, a file in ``trusted`` (another process's :meth:`Bundle.stamps`) that still has its stamp is
    taken as verified: a worker does not read the whole model again to hash it."""
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    if verify is True:
        verify_files(root, manifest)
    checked: dict[str, FileStamp | None] = dict.fromkeys(manifest.files) if verify is True else {}
    return Bundle(root, manifest, verify_on_read=verify == "on_read", trusted=dict(trusted or {}), _checked=checked)
