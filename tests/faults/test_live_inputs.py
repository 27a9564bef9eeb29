"""`logs live` refuses what it cannot use with one line and a hint: a URL that is not MQTT, a password file others
can read or that is missing, TLS files that are not there; a broker that is not up is retried, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.conftest import refused, run_cli
from tests.mqtt_broker import free_port

pytest.importorskip("paho.mqtt.client")
pytest.importorskip("duckdb")


def test_not_an_mqtt_url(tmp_path: Path) -> None:
    refused(run_cli("logs", "live", "--broker", "http://broker:80", "--into", tmp_path / "s.duckdb"),
            "http://broker:80", "is not mqtt://", "hint:")


def test_credentials_in_the_url_are_refused(tmp_path: Path) -> None:
    text = refused(run_cli("logs", "live", "--broker", "mqtt://desk:Hunter2@broker", "--into", tmp_path / "s.duckdb"),
                   "credentials do not belong in the URL")
    assert "Hunter2" not in text.replace("mqtt://desk:Hunter2@broker", "")


def test_password_file_readable_by_others_or_missing(tmp_path: Path) -> None:
    creds = tmp_path / "desk.creds"
    creds.write_text("desk:pw\n")
    os.chmod(creds, 0o644)
    refused(run_cli("logs", "live", "--broker", "mqtt://127.0.0.1", "--into", tmp_path / "s.duckdb",
                    "--credentials", creds), "readable by others", "chmod 600")
    refused(run_cli("logs", "live", "--broker", "mqtt://127.0.0.1", "--into", tmp_path / "s.duckdb",
                    "--credentials", tmp_path / "nope.creds"), "nope.creds", "username:password")


def test_missing_ca_file(tmp_path: Path) -> None:
    refused(run_cli("logs", "live", "--broker", "mqtts://127.0.0.1", "--into", tmp_path / "s.duckdb",
                    "--ca", tmp_path / "missing-ca.pem"), "TLS files unusable", "uplink.ca_file")


def test_a_broker_that_is_down_is_retried_until_the_end(tmp_path: Path) -> None:
    result = run_cli("logs", "live", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--into", tmp_path / "s.duckdb",
                     "--for", "2")
    assert result.exit_code == 0, result.output
    assert "cannot reach" in result.output and "retrying in" in result.output and "Traceback" not in result.output
