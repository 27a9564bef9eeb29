"""One MQTT connection (paho-mqtt, the ``uplink`` extra): TLS, credentials from a private file, last will, acks.

A fresh client per connection: nothing is queued inside paho between connections, so the card stays the only
outbox and a reconnection re-sends exactly what the cursor says was never acknowledged.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config.uplink import UplinkSection
from edge.uplink.messages import UplinkError

CONNECT_TIMEOUT_S = 10.0
INSTALL_HINT = "pip install 'biolingual-edge[uplink]' (paho-mqtt), or remove the uplink section"


def paho_available() -> bool:
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class LinkSettings:
    """Where and how to connect; the password is only ever held here, never logged or written to the card."""

    host: str
    port: int
    tls: bool = False
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    username: str | None = None
    password: str | None = None
    client_id: str = ""
    keepalive_s: int = 60
    clean_session: bool = True
    will: tuple[str, bytes] | None = None
    """(topic, payload) the broker publishes, retained, if the connection dies without a goodbye."""

    def __repr__(self) -> str:  # keep the password out of tracebacks and logs
        return f"LinkSettings({self.host}:{self.port}, tls={self.tls}, user={self.username!r})"

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def read_credentials(path: Path) -> tuple[str, str]:
    """``username:password`` from a file only its owner may read (like ssh keys); refuses anything looser."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise UplinkError(f"uplink credentials file {path}: {e.strerror}",
                          "create it with one line username:password, owned by the service user, mode 600") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UplinkError(f"uplink credentials file {path} is readable by others (mode {stat.S_IMODE(mode):o})",
                          f"chmod 600 {path} (owned by the service user)")
    username, sep, password = text.partition(":")
    if not sep or not username or "\n" in text:
        raise UplinkError(f"uplink credentials file {path} is not one line username:password",
                          "write exactly one line: username:password")
    return username, password


def link_settings(section: UplinkSection, client_id: str, will: tuple[str, bytes] | None = None,
                  clean_session: bool = True) -> LinkSettings:
    username = password = None
    if section.credentials_file is not None:
        username, password = read_credentials(Path(section.credentials_file))
    return LinkSettings(section.host, section.port, section.tls, section.ca_file, section.client_cert,
                        section.client_key, username, password, client_id, section.keepalive_s, clean_session, will)


class Link:
    """A connected client: ``publish`` returns a message id; acknowledged ids arrive through ``on_ack``."""

    def __init__(self, settings: LinkSettings, on_ack: Callable[[int], None] = lambda mid: None,
                 on_message: Callable[[Any], None] | None = None, manual_ack: bool = False) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:
            raise UplinkError("the uplink needs paho-mqtt, which is not installed", INSTALL_HINT) from e
        self.settings = settings
        self.lost = threading.Event()
        self.error = ""
        self._connected = threading.Event()
        self._refused = ""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                             clean_session=settings.clean_session, reconnect_on_failure=False,
                             manual_ack=manual_ack)
        client.max_inflight_messages_set(0)  # our own window (uplink.max_inflight) decides
        client.max_queued_messages_set(0)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.will is not None:
            client.will_set(settings.will[0], settings.will[1], qos=1, retain=True)
        if settings.tls:
            try:
                client.tls_set(ca_certs=_str(settings.ca_file), certfile=_str(settings.client_cert),
                               keyfile=_str(settings.client_key), cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as e:
                raise UplinkError(f"uplink TLS files unusable: {e}",
                                  "check the CA file and client certificate/key are readable PEM files "
                                  "(unit: uplink.ca_file, client_cert, client_key; desk: --ca, --cert, --key)") from e
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = lambda _c, _u, mid, _rc, _p: on_ack(mid)
        if on_message is not None:
            client.on_message = lambda _c, _u, message: on_message(message)
        self.client = client

    def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Connect and wait for the broker's answer; raises :class:`UplinkError` saying why it failed."""
        s = self.settings
        try:
            self.client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except ssl.SSLError as e:
            raise UplinkError(f"TLS with {s.where} failed: {e.reason or e}",
                              "check uplink.ca_file, the broker's certificate dates and name") from e
        except socket.gaierror as e:
            raise UplinkError(f"cannot resolve {s.host}: {e.strerror}", "check uplink.url and the modem/DNS") from e
        except OSError as e:
            raise UplinkError(f"cannot reach {s.where}: {e.strerror or e}",
                              "is the broker running and the port open?") from e
        self.client.loop_start()
        if not self._connected.wait(timeout_s) or self._refused:
            self.close()
            reason = self._refused or f"no answer within {timeout_s:g} s"
            raise UplinkError(f"broker {s.where} refused the connection: {reason}",
                              "check the username and password in uplink.credentials_file"
                              if "auth" in reason.lower() or "password" in reason.lower()
                              else "check the broker's log")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != 0:
            self.lost.set()
            self.error = self.error or f"publish failed (code {info.rc})"
        return int(info.mid)

    def close(self) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = str(reason)
        self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self.error = self.error or f"connection lost: {reason}"
        self.lost.set()


def _str(path: Path | None) -> str | None:
    return None if path is None else os.fspath(path)
