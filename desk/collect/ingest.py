"""``logs collect``: many card folders -> one DuckDB database (and Parquet on request), plus the findings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from desk.archive.windows import open_store
from desk.collect.cards import Finding, read_card
from desk.collect.database import connect, copy_table, ingest, record_findings
from desk.collect.embeddings import archive_card
from desk.collect.findings import run_checks

if TYPE_CHECKING:
    import duckdb

TABLES = ("detections", "effort", "events", "health", "boots", "card_boots", "clips", "findings")


@dataclass(frozen=True)
class CollectResult:
    cards: int
    read: dict[str, int]
    added: dict[str, int]
    findings: list[Finding]


def collect(card_dirs: Sequence[Path], db_path: Path, parquet_dir: Path | None = None,
            now: datetime | None = None, on_card: Callable[[Path], None] | None = None) -> CollectResult:
    """Ingest every card (idempotently), then check the whole database; ``now`` defaults to the current UTC time."""
    collected_at = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)
    read: Counter[str] = Counter()
    added: Counter[str] = Counter()
    findings: list[Finding] = []
    con = connect(db_path)
    store = open_store(db_path, writable=True)
    cards: list[str] = []
    try:
        for folder in card_dirs:
            if on_card is not None:
                on_card(folder)
            contents = read_card(folder)
            cards.append(contents.card)
            counts = ingest(con, contents)
            read.update(counts.read)
            added.update(counts.added)
            archived = archive_card(store, folder, frozenset(contents.skipped_boots))
            read["windows"] += archived.read
            added["windows"] += archived.added
            # an `analyze --embeddings` folder holds window embeddings only: not a card missing its log
            findings.extend(f for f in contents.findings if not (archived.read and f.check == "card"))
            findings.extend(Finding("warning", "rows", f"{n} {table} row(s) with unparseable key fields skipped",
                                    contents.card) for table, n in counts.unusable.items() if n)
            findings.extend(archived.findings)
        added["indexed"] = store.index()
        findings.extend(run_checks(con, collected_at))
        record_findings(con, findings, cards)
        if parquet_dir is not None:
            write_parquet(con, parquet_dir)
    finally:
        store.close()
        con.close()
    return CollectResult(len(card_dirs), dict(read), dict(added), findings)


def write_parquet(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    """One Parquet file per table (``detections.parquet`` ...), replaced whole."""
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        copy_table(con, table, folder / f"{table}.parquet")
