"""A tiny ``sd_notify``: tell systemd the daemon is ready, alive (watchdog) and what it is doing.

Only the daemon's data path should call :func:`watchdog` — after a window was analysed — so systemd's
watchdog guards the audio flow, not merely the process. Outside systemd (no ``$NOTIFY_SOCKET``) every call
is a cheap no-op returning False.
"""

from __future__ import annotations

import os
import socket

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify(*assignments: str) -> bool:
    """Send ``KEY=VALUE`` lines to systemd; True when a notification socket took them."""
    address = os.environ.get(NOTIFY_SOCKET_ENV)
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    payload = "\n".join(assignments).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    """``READY=1``: audio flows and the first window was analysed."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def watchdog() -> bool:
    """``WATCHDOG=1``: the data path made progress."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """``STATUS=…``: one line shown by ``systemctl status``."""
    return notify(f"STATUS={text}")


def stopping() -> bool:
    """``STOPPING=1``: shutting down after flushing."""
    return notify("STOPPING=1")
