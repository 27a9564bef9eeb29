"""``biolingual-edge logs live``: the units on the air, written into the season database as they speak."""

from __future__ import annotations

import signal
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from desk.collect.database import connect
from desk.collect.live import LiveCollector, live_client_id, unit_liveness
from edge.cli_support import report_errors, stderr
from edge.config.uplink import UplinkSection
from edge.errors import ConfigError
from edge.uplink.link import link_settings

SILENT_AFTER = 3
"""A unit is flagged silent after this many heartbeat periods without a message."""


def register(app: typer.Typer) -> None:
    app.command()(report_errors(live))


def live(
    broker: Annotated[str, typer.Option("--broker", help="mqtt://HOST[:1883] or mqtts://HOST[:8883] (TLS).")],
    into: Annotated[Path, typer.Option("--into", help="DuckDB database to create or add to (as `logs collect`).")],
    prefix: Annotated[str, typer.Option("--prefix", help="Topic prefix the units use (uplink.topic_prefix).")]
    = "biolingual",
    credentials: Annotated[Path | None, typer.Option("--credentials",
                                                     help="File with one line username:password (mode 600).")] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="CA certificate (PEM) of the broker (mqtts).")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="Client certificate (PEM).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Client key (PEM).")] = None,
    seconds: Annotated[float | None, typer.Option("--for", help="Stop after this many seconds (default: Ctrl-C).")]
    = None,
    silent_after: Annotated[int, typer.Option("--silent-after", min=1,
                                              help="Flag units quiet for this many heartbeats.")] = SILENT_AFTER,
) -> None:
    """Subscribe to the units' uplink and write their rows into the tables `logs collect` fills (idempotent)."""
    try:
        section = UplinkSection.model_validate({"url": broker, "credentials_file": credentials, "ca_file": ca,
                                                "client_cert": cert, "client_key": key, "topic_prefix": prefix})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "broker"
        raise ConfigError(f"{where}: {first['msg']}", "e.g. --broker mqtts://broker.example.org:8883 --ca ca.pem") \
            from None
    settings = link_settings(section, live_client_id(into), clean_session=False)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    collector = LiveCollector(into, settings, prefix, on_line=lambda line: stderr.print(line, soft_wrap=True,
                                                                                          markup=False))
    counts = collector.run(stop, seconds)
    added = ", ".join(f"{n} {table}" for table, n in sorted(counts.added.items()) if n) or "nothing new"
    stderr.print(f"{counts.messages} message(s): added {added}; {counts.rejected} rejected -> {into}")
    con = connect(into, read_only=True)
    try:
        for unit in unit_liveness(con, datetime.now(timezone.utc), silent_after):
            heard = "never" if unit.last_heard_utc is None else f"{unit.last_heard_utc:%Y-%m-%d %H:%M:%S} UTC"
            flag = f"  SILENT (> {silent_after} heartbeats of {unit.heartbeat_s:g} s)" if unit.silent else ""
            stderr.print(f"{unit.unit_id}: last heard {heard}, status {unit.status or '?'}{flag}", markup=False)
    finally:
        con.close()
