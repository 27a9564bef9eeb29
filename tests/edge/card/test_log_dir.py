"""An unmounted or read-only SD card: `check` FAILs it and the daemon refuses to start (never the OS disk)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.card.log_dir import log_dir_problem
from edge.config.loader import UnitConfig, resolve_config
from edge.errors import ConfigError
from edge.model.bundle import FrontendParams, Manifest, write_manifest
from edge.ops.checks import Status, check_storage
from edge.ops.setup import build_daemon


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system (a tmpfs mounted ro), like a locked card."""
    mount_point = tmp_path / "locked-card"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def unit_config(tmp_path: Path, log_dir: Path) -> UnitConfig:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    write_manifest(bundle, Manifest(model_id="ckpt", model_revision="sha256:0", embedding_dim=32, logit_scale=10.0,
                                    frontend=FrontendParams(48_000, 1024, 480, 64, 50.0, 14_000.0, 10)))
    labels = tmp_path / "labels.txt"
    labels.write_text("toad\n", encoding="utf-8")
    return resolve_config(None, None, {"model.bundle": str(bundle), "analysis.labels": str(labels),
                                       "analysis.threshold": 5.0, "storage.log_dir": str(log_dir)})


def test_missing_log_folder_fails_the_check(tmp_path: Path) -> None:
    card = tmp_path / "media" / "sd" / "biolingual"  # the card did not mount: its folder is not there
    row = check_storage(unit_config(tmp_path, card))
    assert row.status is Status.FAIL and "does not exist" in row.detail and "mounted" in row.detail
    card.mkdir(parents=True)
    assert check_storage(unit_config(tmp_path, card)).status is Status.PASS


def test_read_only_log_folder_fails_the_check(tmp_path: Path, read_only_folder: Path) -> None:
    row = check_storage(unit_config(tmp_path, read_only_folder))
    assert row.status is Status.FAIL and "read-only" in row.detail


def test_a_file_is_not_a_log_folder(tmp_path: Path) -> None:
    file = tmp_path / "logs"
    file.write_text("")
    assert "is a file" in (log_dir_problem(file) or "")


def test_daemon_refuses_to_start_without_its_card(tmp_path: Path, read_only_folder: Path) -> None:
    missing = tmp_path / "sd" / "biolingual"
    with pytest.raises(ConfigError, match="does not exist") as info:
        build_daemon(unit_config(tmp_path, missing), create_log_dir=False)
    assert "mount the card" in info.value.hint and not missing.exists()
    with pytest.raises(ConfigError, match="read-only"):
        build_daemon(unit_config(tmp_path, read_only_folder), create_log_dir=True)
