"""Label files as real editors save them, and labels named by example folders (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import LabelError
from edge.scoring.labels import labels_from_folders, read_labels


def test_utf8_bom_is_not_part_of_the_first_label(tmp_path: Path) -> None:
    plain, bom = tmp_path / "plain.txt", tmp_path / "notepad.txt"
    plain.write_text("Great Plains Toad; Anaxyrus cognatus\nEurasian Magpie\n", encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n", b"\r\n"))  # Notepad / Excel "CSV UTF-8"
    assert read_labels(bom).names == ("Great Plains Toad", "Eurasian Magpie")
    assert read_labels(bom).key == read_labels(plain).key  # so its embeddings are found


def test_bom_alone_is_an_empty_list(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"\xef\xbb\xbf\r\n")
    with pytest.raises(LabelError, match="has no labels"):
        read_labels(path)


def test_labels_from_example_folders(tmp_path: Path) -> None:
    for name in ("night", "Great Plains Toad", ".DS_Store_dir"):
        (tmp_path / name).mkdir()
    (tmp_path / "readme.txt").write_text("not a label")
    assert labels_from_folders(tmp_path).names == ("Great Plains Toad", "night")
    with pytest.raises(LabelError, match="no sub-folders"):
        labels_from_folders(tmp_path / "night")
