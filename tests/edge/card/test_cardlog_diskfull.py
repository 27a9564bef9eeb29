"""A full card (real size-capped tmpfs): logging goes on, rows wait in memory, the gap is recorded on return."""

from __future__ import annotations

from pathlib import Path

from desk.collect.ingest import collect
from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.governor import StoragePolicy
from edge.card.segments import read_csv_segment, read_jsonl_segment
from tests.cardlog_support import HOP, LABELS, RATE, T0, WINDOW, event_at, fill_up, small_filesystem

BATCHES = 60


def log_batches(log: CardLog, first: int, count: int) -> None:
    for i in range(first, first + count):
        log.detections([event_at(i * HOP, LABELS[i % 3])])
        log.effort(i * HOP, i * HOP + WINDOW)
        log.flush()


def card_rows(card: Path) -> list[int]:
    starts = []
    for path in sorted((card / "detections").iterdir()):
        segment = read_csv_segment(path)
        assert not segment.notes and not segment.problems, "a failed write must leave no torn line behind"
        starts += [int(row[segment.header.index("start_sample")]) for row in segment.rows]
    return starts


def card_events(card: Path) -> list[dict[str, object]]:
    events = []
    for path in sorted((card / "events").iterdir()):
        segment = read_jsonl_segment(path)
        assert not segment.notes and not segment.problems
        events += segment.records
    return events


def test_full_card_keeps_rows_in_memory_and_records_the_gap(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "card", "1m") as card:
        log = CardLog(card, UnitIdentity("AM-01", "marsh"), RATE, {"config_hash": "x"})
        log.open_stream(T0, 0, "ntp")
        log_batches(log, 0, BATCHES)
        filler = fill_up(card)
        log_batches(log, BATCHES, BATCHES)  # must not raise
        assert log.pending_records > 0, "rows logged while full wait in memory"
        written_while_full = card_rows(card)
        filler.unlink()
        log_batches(log, 2 * BATCHES, BATCHES)
        log.close()
        assert card_rows(card) == [i * HOP for i in range(3 * BATCHES)], "every row, once, in order"
        assert len(written_while_full) < 2 * BATCHES
        events = card_events(card)
        kinds = [e["kind"] for e in events]
        full, back = events[kinds.index("disk_full")], events[kinds.index("disk_space_returned")]
        assert full["errno"] == 28
        assert back["dropped_records"] == {"detections": 0, "effort": 0, "health": 0, "events": 0}
        assert float(str(back["gap_s"])) >= 0 and int(str(back["until_sample"])) > int(str(back["since_sample"]))
        result = collect([card], tmp_path / "db.duckdb")
        assert result.added["detections"] == 3 * BATCHES


def test_overflowing_the_memory_queue_drops_oldest_and_says_how_many(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "card", "1m") as card:
        log = CardLog(card, UnitIdentity("AM-01", "marsh"), RATE, {}, StoragePolicy(max_pending_records=10))
        log.open_stream(T0, 0, "ntp")
        log_batches(log, 0, 5)
        filler = fill_up(card)
        log_batches(log, 5, 30)
        filler.unlink()
        log.flush()
        log.close()
        starts = card_rows(card)
        assert starts[:5] == [i * HOP for i in range(5)] and starts[-10:] == [i * HOP for i in range(25, 35)]
        back = next(e for e in card_events(card) if e["kind"] == "disk_space_returned")
        dropped = back["dropped_records"]
        assert isinstance(dropped, dict) and dropped["detections"] == 35 - len(starts)
