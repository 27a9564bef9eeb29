"""The card as an outbox, without a broker: order, the running boot's fsync'd limit, torn tails, the cursor file."""

from __future__ import annotations

from pathlib import Path

from edge.uplink.outbox import CardOutbox, Cursor
from tests.cardlog_support import write_card


def drain(outbox: CardOutbox, position: dict[str, int], max_rows: int = 7) -> list[tuple[str, int, int, int]]:
    sent = []
    while (batch := outbox.next_batch(position, max_rows)) is not None:
        sent.append((batch.segment, batch.start, batch.end, batch.rows))
        position[batch.segment] = batch.end
    return sent


def test_everything_once_oldest_first_in_whole_lines(tmp_path: Path) -> None:
    write_card(tmp_path, minutes=3, boot_id="20240501T210000Z-aaaaaa")
    write_card(tmp_path, minutes=3, boot_id="20240430T210000Z-bbbbbb")  # an older boot, written later
    outbox = CardOutbox(tmp_path, ["detections", "effort", "events", "health"])
    sent = drain(outbox, {})
    segments = [s for s, *_ in sent]
    assert segments[:2] == ["boots/20240430T210000Z-bbbbbb.json", "boots/20240501T210000Z-aaaaaa.json"]
    data = [s for s in dict.fromkeys(segments) if not s.startswith("boots/")]
    assert data == sorted(data, key=lambda s: (s.split("/")[1][:10], s.split("_")[1], s.split("/")[0] != "effort"))
    for segment in data:
        file = tmp_path / segment
        lines = file.read_bytes().split(b"\n")
        header = len(lines[0]) + 1 if segment.endswith(".csv") else 0
        spans = [(a, b) for s, a, b, _ in sent if s == segment]
        assert spans[0][0] == header and spans[-1][1] == file.stat().st_size  # from after the header to the end
        assert all(b == a2 for (_, b), (a2, _) in zip(spans, spans[1:]))  # no gap, no overlap
    assert all(rows <= 7 for *_, rows in sent)
    assert drain(outbox, {s: b for s, _, b, _ in sent}) == []  # all sent: nothing more


def test_running_boot_is_read_only_up_to_what_was_fsynced_and_torn_tails_wait(tmp_path: Path) -> None:
    folder = tmp_path / "detections"
    folder.mkdir(parents=True)
    part = folder / "2024-05-01_BOOT1_000.csv.part"
    part.write_bytes(b"utc,label\n2024-05-01T00:00:00,toad\n2024-05-01T00:00:05,owl\n2024-05-01T00:00:1")
    durable = {"detections/2024-05-01_BOOT1_000.csv": len(b"utc,label\n2024-05-01T00:00:00,toad\n")}
    running = CardOutbox(tmp_path, ["detections"], "BOOT1", lambda: durable)
    first = running.next_batch({}, 100)
    assert first is not None and first.lines == ["2024-05-01T00:00:00,toad"]  # not the line still being fsync'd
    assert running.next_batch({first.segment: first.end}, 100) is None
    earlier = CardOutbox(tmp_path, ["detections"], "BOOT2")  # another boot's file: every complete line
    batch = earlier.next_batch({}, 100)
    assert batch is not None and batch.lines == ["2024-05-01T00:00:00,toad", "2024-05-01T00:00:05,owl"]
    assert batch.header == "utc,label" and batch.segment == "detections/2024-05-01_BOOT1_000.csv"
    assert earlier.next_batch({batch.segment: batch.end}, 100) is None  # the torn line waits for its newline


def test_cursor_survives_and_a_damaged_one_resends_everything(tmp_path: Path) -> None:
    cursor = Cursor(tmp_path)
    cursor.advance("detections/x.csv", 120)
    cursor.advance("detections/x.csv", 80)  # never backwards
    cursor.save()
    assert Cursor(tmp_path).acked == {"detections/x.csv": 120} and not Cursor(tmp_path).problem
    cursor.path.write_text("{not json")
    damaged = Cursor(tmp_path)
    assert damaged.acked == {} and "re-sending the whole card" in damaged.problem


def test_acked_sealed_segments_are_never_opened_again(tmp_path: Path) -> None:
    write_card(tmp_path, minutes=2)
    outbox = CardOutbox(tmp_path, ["detections", "effort", "events", "health"])
    sent = drain(outbox, {})
    acked = {s: b for s, _, b, _ in sent}
    fresh = CardOutbox(tmp_path, ["detections", "effort", "events", "health"])
    fresh.forget_acked(acked)
    assert fresh._segments() == [] and fresh._manifests() == []
    assert fresh.backlog_bytes(acked) == 0
