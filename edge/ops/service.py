"""The systemd unit that keeps a recorder running: notify-type, watchdog on the data, restarts forever."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from edge import durable
from edge.config.loader import UnitConfig
from edge.errors import ConfigError

SERVICE_FILE = "biolingual-edge.ops.service"
DEFAULT_SYSTEMD_DIR = Path("/etc/systemd/system")
DEFAULT_USER = "biolingual"
AUDIO_GROUP = "audio"
GPU_GROUPS = ("video", "render")
"""Owners of the GPU device nodes on L4T (/dev/nvhost-*, /dev/nvmap: video; /dev/dri/renderD*: render)."""
STATE_DIRECTORY = "biolingual-edge"
"""``StateDirectory=``: /var/lib/biolingual-edge, writable under ProtectSystem=strict and exported to the
daemon as $STATE_DIRECTORY; runtime caches (ONNX Runtime's TensorRT engine cache) live there, not in the
read-only bundle (edge/model/backends/cache_dirs.py)."""
START_TIMEOUT_S = 300
"""Bundle checks, model load (a TensorRT engine can take a minute) and the first window before READY=1."""
STOP_TIMEOUT_S = 30
"""Time to flush pending detections after SIGTERM."""
RESTART_DELAY_S = 10
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_NEEDS_QUOTES = re.compile(r"[\s\"'\\;]")


@dataclass(frozen=True)
class InstallResult:
    service_path: Path
    log_dir_created: bool


def _quote(arg: str) -> str:
    """One ExecStart argument: ``%`` escaped (systemd specifiers), quoted when it has spaces or quotes."""
    arg = arg.replace("%", "%%")
    if _NEEDS_QUOTES.search(arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _check_user(user: str) -> None:
    if not USER_NAME.match(user):
        raise ConfigError(f"'{user}' is not a valid user name", "use lowercase letters, digits, _ and -")
    if user == "root":
        raise ConfigError("refusing to run the recorder as root",
                          f"create an unprivileged user: sudo useradd --system --groups {AUDIO_GROUP} {DEFAULT_USER}")


def supplementary_groups(config: UnitConfig) -> tuple[str, ...]:
    """``audio`` for the microphone, plus the GPU device groups when the model runs on TensorRT."""
    return (AUDIO_GROUP, *GPU_GROUPS) if config.model.backend == "trt" else (AUDIO_GROUP,)


def _network(config: UnitConfig) -> str:
    """No network at all; with an uplink, outgoing connections only (binding any port, a listener, is refused)."""
    if not config.uplink.enabled:
        return ("# No network: no listener, no sockets except local ones (systemd notify, PulseAudio).\n"
                "RestrictAddressFamilies=AF_UNIX\nIPAddressDeny=any")
    return ("# Uplink: outgoing connections to the MQTT broker (and DNS) only; bind(), so any listener, is refused.\n"
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\nSocketBindDeny=any")


def render_service_file(config: UnitConfig, config_path: Path, user: str = DEFAULT_USER,
                python: str = sys.executable) -> str:
    """The unit file text for running ``biolingual-edge run --config config_path`` as ``user``."""
    _check_user(user)
    config_path = config_path.resolve()
    exec_start = " ".join(_quote(a) for a in (python, "-m", "edge", "run", "--config", str(config_path)))
    unit = config.unit
    name = unit.unit_id + (f" ({unit.deployment_id})" if unit.deployment_id else "")
    log_dir = " ".join(_quote(str(folder)) for folder in (config.storage.log_dir, config.storage.fallback_dir))
    return f"""\
# Written by `biolingual-edge service install`; regenerate rather than edit.
[Unit]
Description=biolingual-edge recorder {name.replace("%", "%%")}
After=sound.target time-sync.target
Wants=sound.target
# Never give up on a field unit: restart however often it fails.
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
WorkingDirectory={str(config_path.parent).replace("%", "%%")}
User={user}
SupplementaryGroups={" ".join(supplementary_groups(config))}
Environment=PYTHONUNBUFFERED=1
Restart=always
RestartSec={RESTART_DELAY_S}
# The daemon sends WATCHDOG=1 only while audio flows and windows are analysed.
WatchdogSec={config.health.watchdog_s:g}
TimeoutStartSec={START_TIMEOUT_S}
TimeoutStopSec={STOP_TIMEOUT_S}
{_network(config)}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={log_dir}
# Writable caches that survive restarts ($STATE_DIRECTORY); the bundle stays read-only.
StateDirectory={STATE_DIRECTORY}
PrivateTmp=yes
ProtectKernelModules=yes
ProtectControlGroups=yes

[Install]
WantedBy=multi-user.target
"""


def install_service_file(config: UnitConfig, config_path: Path, user: str, systemd_dir: Path) -> InstallResult:
    """Write the unit into ``systemd_dir`` and, as root, create the log folder owned by ``user``."""
    text = render_service_file(config, config_path, user)
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"user '{user}' does not exist on this machine",
                          f"create it: sudo useradd --system --groups {','.join(supplementary_groups(config))} "
                          f"--no-create-home {user}") from None
    if not systemd_dir.is_dir():
        raise ConfigError(f"systemd folder {systemd_dir} does not exist", "pass --systemd-dir with an existing folder")
    path = systemd_dir / SERVICE_FILE
    try:
        durable.atomic_write(path, text.encode("utf-8"))
        path.chmod(0o644)
    except PermissionError as e:
        raise ConfigError(f"cannot write {path} (permission denied)", "run it with sudo") from e
    created = False
    for folder in (config.storage.log_dir, config.storage.fallback_dir):  # ReadWritePaths must exist
        if not folder.exists() and os.geteuid() == 0:
            folder.mkdir(parents=True, mode=0o750)
            shutil.chown(folder, account.pw_uid, account.pw_gid)
            created |= folder == config.storage.log_dir
    return InstallResult(path, created)
