"""Bundles appear whole or not at all: an export that fails half way leaves nothing at --out."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.errors import ExportError
from export.staging import STAGING_PREFIX, check_new_folder, staged_folder


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(ExportError), staged_folder(out) as staging:
        (staging / "audio_encoder.fp32.onnx").write_bytes(b"half an export")
        raise ExportError("parity failed", "see parity.json")
    assert list(tmp_path.iterdir()) == []


def test_finished_build_replaces_the_old_bundle_whole(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.onnx").write_bytes(b"old")
    with staged_folder(out) as staging:
        assert not (staging / "old.onnx").exists()
        (staging / "manifest.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_existing_bundle_is_kept_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ExportError, match="already exists") as info:
        check_new_folder(tmp_path, overwrite=False)
    assert "--overwrite" in info.value.hint
    check_new_folder(tmp_path, overwrite=True)
    check_new_folder(tmp_path / "new", overwrite=False)
