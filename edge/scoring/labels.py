"""The user's species list: ``labels.txt`` parsing and the hash that keys its embeddings in a bundle.

Format: UTF-8, one label per line; ``#`` starts a comment; blank lines are ignored. A line may give a
scientific name after a semicolon: ``Great Plains Toad; Anaxyrus cognatus``. The common name is the label.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edge.errors import LabelError

SCIENTIFIC_SEPARATOR = ";"
COMMENT = "#"
BYTE_ORDER_MARK = "\ufeff"
"""Windows Notepad and Excel's "CSV UTF-8" start files with it; it is not part of the first label."""


@dataclass(frozen=True)
class LabelList:
    """Parsed labels in file order, with optional scientific names (``""`` where none was given)."""

    names: tuple[str, ...]
    scientific_names: tuple[str, ...]

    @property
    def key(self) -> str:
        """Content hash (16 hex chars) of the labels, independent of comments and blank lines."""
        canonical = "\n".join(f"{n}{SCIENTIFIC_SEPARATOR}{s}" for n, s in zip(self.names, self.scientific_names))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def parse_labels(text: str, source: str = "labels") -> LabelList:
    """Parse label-file text; duplicates and an empty list raise :class:`LabelError` naming the line."""
    names: list[str] = []
    scientific: list[str] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.removeprefix(BYTE_ORDER_MARK).splitlines(), start=1):
        line = raw.split(COMMENT, 1)[0].strip()
        if not line:
            continue
        common, _, sci = (part.strip() for part in line.partition(SCIENTIFIC_SEPARATOR))
        if not common:
            raise LabelError(f"{source} line {number}: no common name before '{SCIENTIFIC_SEPARATOR}'",
                             "write `Common name; Scientific name`")
        folded = common.casefold()
        if folded in first_line:
            raise LabelError(
                f"{source} line {number}: duplicate label '{common}' (first on line {first_line[folded]})",
                "remove one of the two lines",
            )
        first_line[folded] = number
        names.append(common)
        scientific.append(sci)
    if not names:
        raise LabelError(f"{source} has no labels", "write one species per line, e.g. `Great Plains Toad`")
    return LabelList(tuple(names), tuple(scientific))


def read_labels(path: Path | str) -> LabelList:
    """Read and parse a label file; unreadable or non-UTF-8 files raise :class:`LabelError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise LabelError(f"label file {path} does not exist", "pass --labels with the path to your list") from e
    except UnicodeDecodeError as e:
        raise LabelError(f"label file {path} is not UTF-8 ({e.reason} at byte {e.start})",
                         "save it as UTF-8") from e
    except OSError as e:
        raise LabelError(f"cannot read label file {path}: {e.strerror}", "check the path and permissions") from e
    return parse_labels(text, source=str(path))


def labels_from_folders(examples_dir: Path) -> LabelList:
    """One label per sub-folder of ``examples_dir`` (sorted; hidden folders skipped): ``EXAMPLES/<label>/*.wav``."""
    if not examples_dir.is_dir():
        raise LabelError(f"examples folder {examples_dir} does not exist",
                         "pass --examples DIR with one sub-folder of recordings per label")
    names = sorted(p.name for p in examples_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise LabelError(f"examples folder {examples_dir} has no sub-folders",
                         "make one folder per label, named as the label, holding its example recordings")
    return parse_labels("\n".join(names), source=f"folder names in {examples_dir}")
