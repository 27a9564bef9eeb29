"""The systemd unit (checked by systemd-analyze) and sd_notify over a real datagram socket."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.config.loader import resolve_config
from edge.daemon import notify
from edge.errors import ConfigError
from edge.ops.service import SERVICE_FILE, render_service_file

REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()


def unit_config(tmp_path: Path, watchdog_s: int = 90) -> Path:
    """A copy of the Pi 5 profile with a log folder under ``tmp_path`` (and a space in its path)."""
    text = (REPO / "firmware_configs" / "raspberry-pi-5.yaml").read_text(encoding="utf-8")
    folder = tmp_path / "unit config"
    folder.mkdir()
    (folder / "labels").mkdir()
    shutil.copy(REPO / "firmware_configs" / "labels" / "north-america-example.txt", folder / "labels")
    text = text.replace("/var/lib/biolingual-edge/logs", str(tmp_path / "field logs"))
    text = text.replace("watchdog_s: 120", f"watchdog_s: {watchdog_s}")
    path = folder / "unit.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def directives(unit_text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit_text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_unit_runs_the_daemon_as_a_notify_service_with_the_watchdog(tmp_path: Path) -> None:
    path = unit_config(tmp_path, watchdog_s=90)
    result = runner.invoke(app, ["service", "install", "--config", str(path), "--user", "recorder", "--dry-run"])
    assert result.exit_code == 0, result.output
    unit = directives(result.stdout)
    assert unit["Type"] == ["notify"]
    assert unit["WatchdogSec"] == ["90"]
    assert unit["Restart"] == ["always"]
    assert "sound.target" in unit["After"][0]
    assert unit["User"] == ["recorder"] and unit["SupplementaryGroups"] == ["audio"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX"] and unit["IPAddressDeny"] == ["any"]
    assert unit["ExecStart"][0].endswith(f'-m edge run --config "{path.resolve()}"')
    assert unit["ReadWritePaths"] == [f'"{tmp_path / "field logs"}" /var/lib/biolingual-edge/unwritten']


def test_with_an_uplink_the_unit_may_connect_out_but_never_listen(tmp_path: Path) -> None:
    path = unit_config(tmp_path)
    config = resolve_config(path, None, {"uplink.url": "mqtts://broker.example.org"})
    unit = directives(render_service_file(config, path, user="recorder"))
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"] and unit["SocketBindDeny"] == ["any"]
    assert "IPAddressDeny" not in unit
    if shutil.which("systemd-analyze") is not None:
        unit_file = tmp_path / SERVICE_FILE
        unit_file.write_text(render_service_file(config, path, user="recorder"), encoding="utf-8")
        verify = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True,
                                check=False)
        assert verify.returncode == 0 and SERVICE_FILE not in verify.stderr, verify.stderr


def test_root_is_refused(tmp_path: Path) -> None:
    config = resolve_config(unit_config(tmp_path), None, {})
    with pytest.raises(ConfigError, match="refusing to run the recorder as root"):
        render_service_file(config, tmp_path / "unit.yaml", user="root")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (apt-get install systemd)")
def test_generated_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    path = unit_config(tmp_path)
    text = render_service_file(resolve_config(path, None, {}), path, user="recorder")
    unit_file = tmp_path / SERVICE_FILE
    unit_file.write_text(text, encoding="utf-8")
    verify = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True,
                            check=False)
    assert verify.returncode == 0, verify.stderr
    assert SERVICE_FILE not in verify.stderr, verify.stderr  # no warnings about our unit either
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("Type=notify", "Type=notifyy"), encoding="utf-8")
    verify_broken = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True,
                                   check=False)
    assert "notifyy" in verify_broken.stderr  # the verifier does read our directives


def test_install_writes_the_unit_and_needs_an_existing_user(tmp_path: Path) -> None:
    path = unit_config(tmp_path)
    systemd_dir = tmp_path / "units"
    systemd_dir.mkdir()
    missing = runner.invoke(app, ["service", "install", "--config", str(path), "--user", "no-such-recorder",
                                  "--systemd-dir", str(systemd_dir)])
    assert missing.exit_code == ConfigError.exit_code
    assert "user 'no-such-recorder' does not exist" in missing.output and "useradd" in missing.output
    user = pwd.getpwuid(os.getuid()).pw_name if os.getuid() != 0 else "daemon"
    done = runner.invoke(app, ["service", "install", "--config", str(path), "--user", user, "--systemd-dir",
                               str(systemd_dir)])
    assert done.exit_code == 0, done.output
    assert directives((systemd_dir / SERVICE_FILE).read_text(encoding="utf-8"))["User"] == [user]


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    sock.bind(address)
    sock.settimeout(2)
    monkeypatch.setenv(notify.NOTIFY_SOCKET_ENV, address)
    yield sock
    sock.close()


def test_notifications_reach_the_socket(notify_socket: socket.socket) -> None:
    assert notify.ready("listening on USB mic")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=listening on USB mic"
    assert notify.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert notify.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_without_systemd_notify_is_a_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(notify.NOTIFY_SOCKET_ENV, raising=False)
    assert not notify.watchdog()
    monkeypatch.setenv(notify.NOTIFY_SOCKET_ENV, str(tmp_path / "gone.sock"))
    assert not notify.status("nobody listens")
