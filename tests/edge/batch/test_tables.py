"""The one table writer: checkpoints give byte-identical tables in every format; names never collide."""

from __future__ import annotations

from pathlib import Path

from edge.batch.tables import DetectionsCsv, RecordingTables, Selection, TableNames


def selections(first: int, count: int) -> list[Selection]:
    return [Selection(i * 5.0, i * 5.0 + 10.0, "toad" if i % 2 else "barred owl, \"hoot\"", 1.5 + i, (50.0, 14000.0),
                      cosine=0.3, p_correct=0.5 if i % 3 else None) for i in range(first, first + count)]


FORMATS = ("csv", "raven", "audacity")


def test_tables_reopened_at_a_checkpoint_continue_byte_for_byte(tmp_path: Path) -> None:
    first, unlogged, last = selections(0, 3), selections(3, 2), selections(5, 4)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for out in (whole, killed):
        out.mkdir()
    one_pass, one_csv = RecordingTables(whole, FORMATS), DetectionsCsv(whole)
    for piece in (first, last):
        one_csv.write("/r/x.wav", piece)
        one_pass.write("/r/x.wav", "x", piece)
    one_csv.close()

    tables, table_csv = RecordingTables(killed, FORMATS, durable=True), DetectionsCsv(killed)
    table_csv.write("/r/x.wav", first)
    tables.write("/r/x.wav", "x", first)
    checkpoint, csv_at = tables.checkpoint("/r/x.wav", "x"), table_csv.position()
    table_csv.write("/r/x.wav", unlogged)  # written, then the run was killed before logging it
    tables.write("/r/x.wav", "x", unlogged)
    table_csv.close()

    resumed, resumed_csv = RecordingTables(killed, FORMATS), DetectionsCsv(killed, resume_at=csv_at)
    resumed.resume("/r/x.wav", "x", checkpoint)
    resumed_csv.write("/r/x.wav", last)
    resumed.write("/r/x.wav", "x", last)
    resumed_csv.close()
    expected = {p.name: p.read_bytes() for p in whole.iterdir()}
    assert {p.name: p.read_bytes() for p in killed.iterdir()} == expected and len(expected) == 3
    assert b"\r" not in b"".join(expected.values()) and b'"barred owl, ""hoot"""' in expected["detections.csv"]


def test_names_are_unique_whatever_the_ids() -> None:
    names = TableNames()
    stems = [names.stem(identity, display) for identity, display in
             [("u1", "u1"), ("u1_", "u1_"), ("U1", "U1"), ("/a/x.wav", "x"), ("/b/x.wav", "x"), ("u1", "u1")]]
    assert stems[0] == "u1" and stems[3] == "x" and stems[5] == "u1"  # the same identity, the same stem
    assert len({s.casefold() for s in stems[:5]}) == 5  # u1_, U1 (on a case-blind card) and b/x.wav get a hash
    assert stems[1].startswith("u1-") and stems[4].startswith("x-")
    again = TableNames()
    assert [again.stem(i, d) for i, d in [("u1", "u1"), ("u1_", "u1_")]] == stems[:2]  # stable across runs
    taken = TableNames()
    taken.stem("/a/x.wav", "x")
    clash = taken.stem("/c/x.wav", f"x-{stems[4].split('-')[1]}")  # a recording literally named like a hashed one
    assert taken.stem("/b/x.wav", "x") != clash


def test_p_correct_is_empty_the_same_way_for_none_and_nan() -> None:
    from edge.batch.tables import p_correct_text

    assert p_correct_text(None) == p_correct_text(float("nan")) == ""
    assert p_correct_text(0.91234) == "0.9123"
