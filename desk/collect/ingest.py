"""``logs collect``: many card folders -> one DuckDB database (and Parquet on request), plus the findings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from desk.archive.windows import WindowStore, open_store
from desk.collect.cards import Finding, read_card
from desk.collect.database import connect, copy_table, ingest, record_findings, run
from desk.collect.embeddings import archive_card, window_batch
from desk.collect.findings import run_checks
from desk.collect.unwritten import Unwritten, find_unwritten, is_unwritten, read_unwritten

if TYPE_CHECKING:
    import duckdb

TABLES = ("detections", "effort", "events", "health", "boots", "card_boots", "clips", "findings")
DUCKDB_MEMORY = "256MB"
"""DuckDB's buffer pool while collecting (its default is 80 % of the machine's memory): the ``windows`` table's
blocks it caches grow ~4.4 B a window (44 MB at 10 M windows); above this DuckDB drops them and reads them again."""


@dataclass(frozen=True)
class CollectResult:
    cards: int
    read: dict[str, int]
    added: dict[str, int]
    findings: list[Finding]
    unwritten: int = 0
    """Fallback files read (rows the units could not write to their cards)."""


def collect(card_dirs: Sequence[Path], db_path: Path, parquet_dir: Path | None = None,
            now: datetime | None = None, on_card: Callable[[Path], None] | None = None,
            unwritten: Sequence[Path] = ()) -> CollectResult:
    """Ingest every card (idempotently), then the fallback files (``*.unwritten.jsonl``: those in ``unwritten``, a
    folder searched all through, and those at the top of a card folder or one folder down), then check the whole
    database; ``now`` defaults to the current UTC time. A fallback file among ``card_dirs`` is taken as one."""
    collected_at = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)
    read: Counter[str] = Counter()
    added: Counter[str] = Counter()
    findings: list[Finding] = []
    con = connect(db_path)
    run(con, f"SET memory_limit = '{DUCKDB_MEMORY}'")
    store = open_store(db_path, writable=True)
    cards: list[str] = []
    spilled = [p for p in card_dirs if is_unwritten(p) and not p.is_dir()]
    card_dirs = [p for p in card_dirs if p not in spilled]
    spilled += [f for p in unwritten for f in find_unwritten(p, recursive=True) or [p]]
    try:
        for folder in card_dirs:
            if on_card is not None:
                on_card(folder)
            contents = read_card(folder)
            beside = find_unwritten(folder)
            spilled += beside
            cards.append(contents.card)
            counts = ingest(con, contents)
            read.update(counts.read)
            added.update(counts.added)
            archived = archive_card(store, folder, frozenset(contents.skipped_boots))
            read["windows"] += archived.read
            added["windows"] += archived.added
            # an `analyze --embeddings` folder (window embeddings only) or a unit's fallback files: not a card
            # missing its log
            findings.extend(f for f in contents.findings if not ((archived.read or beside) and f.check == "card"))
            findings.extend(Finding("warning", "rows", f"{n} {table} row(s) with unparseable key fields skipped",
                                    contents.card) for table, n in counts.unusable.items() if n)
            findings.extend(archived.findings)
        spilled = list({p.resolve(): p for p in spilled}.values())
        for path in spilled:  # the same file named twice, or found and named, is read once
            if on_card is not None:
                on_card(path)
            fallback = read_unwritten(path)
            cards.append(fallback.contents.card)
            findings.extend(_ingest_unwritten(con, store, fallback, read, added))
        added["indexed"] = store.index()
        findings.extend(run_checks(con, collected_at))
        record_findings(con, findings, cards)
        if parquet_dir is not None:
            write_parquet(con, parquet_dir)
    finally:
        store.close()
        con.close()
    return CollectResult(len(card_dirs), dict(read), dict(added), findings, len(spilled))


def _ingest_unwritten(con: duckdb.DuckDBPyConnection, store: WindowStore, fallback: Unwritten,
                      read: Counter[str], added: Counter[str]) -> list[Finding]:
    """A fallback file's rows into the tables and the archive, deduplicated on the keys the card's rows use."""
    label, path = fallback.contents.card, fallback.path
    findings = list(fallback.contents.findings)
    if fallback.unplaced:
        what = ", ".join(f"{n} {kind}" for kind, n in sorted(fallback.unplaced.items()))
        findings.append(Finding("error", "unwritten", f"{path}: {what} row(s) name no unit or boot (window "
                                "embeddings: no segment header before them), so they cannot be placed; not collected "
                                "(copy the whole file again from the unit's storage.fallback_dir)", label))
    if not fallback.rows:
        if not fallback.unplaced and not fallback.contents.findings:
            findings.append(Finding("warning", "unwritten", f"{path}: no rows in this fallback file", label))
        return findings
    counts = ingest(con, fallback.contents)
    read.update(counts.read)
    added.update(counts.added)
    findings.extend(Finding("warning", "rows", f"{path}: {n} {table} row(s) with unparseable key fields skipped",
                            label) for table, n in counts.unusable.items() if n)
    for segment in fallback.windows:
        if segment.header is not None and len(segment.records):
            read["windows"] += len(segment.records)
            added["windows"] += store.insert(window_batch(segment, path.name, label))
    known = set(run(con, "SELECT unit_id, boot_id FROM boots"))
    findings.extend(Finding("warning", "manifest", f"{path}: boot {boot} of unit {unit} is on no collected card (no "
                            "manifest): its rows are kept, its settings unknown", label)
                    for unit, boot in sorted(fallback.boots() - known))
    return findings


def write_parquet(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    """One Parquet file per table (``detections.parquet`` ...), replaced whole."""
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        copy_table(con, table, folder / f"{table}.parquet")
