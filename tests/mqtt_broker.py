"""A real MQTT broker for tests: Debian's mosquitto on 127.0.0.1, a free port, a generated config (plain, TLS with
a CA made on the spot by the openssl CLI, password file), stopped and restarted on the same port for outages."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

READY_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_mosquitto() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    pytest.importorskip("paho.mqtt.client")
    return path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    """A client certificate signed by the same CA (for a broker that requires one)."""


def make_tls(folder: Path, *, expired: bool = False) -> Tls:
    """A CA and a server certificate for 127.0.0.1 signed by it (``expired``: valid only in 2001)."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=test-ca", cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    if expired:  # openssl 3.0's x509 cannot back-date a certificate: sign it with the cryptography package
        _sign_expired(folder)
    else:
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
            "-subj", "/CN=unit-pole-7", cwd=folder)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "client.pem", "-days", "2", cwd=folder)
    return Tls(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
               folder / "client.key")


def _sign_expired(folder: Path) -> None:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    csr = x509.load_pem_x509_csr((folder / "server.csr").read_bytes())
    start = dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class Broker:
    """mosquitto on 127.0.0.1:``port``; ``stop()``/``start()`` make an outage, keeping the port."""

    def __init__(self, folder: Path, *, tls: Tls | None = None, users: dict[str, str] | None = None,
                 require_certificate: bool = False) -> None:
        self.binary = need_mosquitto()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        # persistence: subscribers' sessions and queued messages survive a restart (saved at a clean stop)
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {folder}/",
                 "user root",
                 f"log_dest file {folder / 'mosquitto.log'}", "log_type all"]
        if users:
            passwd = folder / "passwd"
            passwd.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
            if require_certificate:
                lines.append("require_certificate true")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {READY_S} s")

    def stop(self, *, crash: bool = False) -> None:
        """Stop cleanly (SIGTERM: sessions saved) or ``crash`` (SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            if crash:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(10)
        self.process = None

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def credentials_file(path: Path, user: str, password: str) -> Path:
    path.write_text(f"{user}:{password}\n")
    os.chmod(path, 0o600)
    return path
