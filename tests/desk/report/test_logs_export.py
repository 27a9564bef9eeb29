"""``logs export`` and ``logs summary`` on collected real card logs."""

from __future__ import annotations

import csv
from pathlib import Path

import crowsetta
import numpy as np
import pytest
from typer.testing import CliRunner

from desk.collect.ingest import collect
from edge.batch.tables import RAVEN_COLUMNS
from edge.card.cardlog import CardLog, UnitIdentity
from edge.cli import app
from tests.cardlog_support import HOP, RATE, T0, event_at, write_card

runner = CliRunner()


def invoke(*args: str) -> None:
    result = runner.invoke(app, ["logs", *args])
    assert result.exit_code == 0, result.output


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture()
def two_stream_db(tmp_path: Path) -> Path:
    """AM-01: two 2-minute streams 30 minutes apart; AM-02: one stream; both collected."""
    write_card(tmp_path / "a", "AM-01", minutes=2, streams=2, pause_minutes=30,
               health={"temperature_c": 47.5})
    write_card(tmp_path / "b", "AM-02", minutes=2)
    db = tmp_path / "db.duckdb"
    collect([tmp_path / "a", tmp_path / "b"], db)
    return db


def test_raven_tables_use_cumulative_begin_time_and_per_stream_file_offset(two_stream_db: Path,
                                                                          tmp_path: Path) -> None:
    invoke("export", "--db", str(two_stream_db), "--format", "raven", "--out", str(tmp_path / "raven"))
    rows = read_tsv(tmp_path / "raven" / "AM-01.BioLingual.selection.table.txt")
    assert len(rows) == 2 * 23 and [int(r["Selection"]) for r in rows] == list(range(1, 47))
    second = rows[23]  # first detection of the second stream
    assert second["File Offset (s)"] == "0.000"
    assert float(second["Begin Time (s)"]) == pytest.approx(120.0), "2 minutes of stream 1 precede it"
    assert second["Begin File"].endswith("_s2") and rows[0]["Begin File"].endswith("_s1")
    assert float(rows[22]["End Time (s)"]) - float(rows[22]["Begin Time (s)"]) == pytest.approx(10.0)
    assert rows[0]["Begin Date Time (UTC)"] == "2024/05/01 21:00:00.000" and rows[0]["Clock Sync"] == "ntp"
    assert list(rows[0]) == list(RAVEN_COLUMNS)  # analyze's schema


def test_audacity_labels_one_track_per_stream_in_stream_seconds(two_stream_db: Path, tmp_path: Path) -> None:
    invoke("export", "--db", str(two_stream_db), "--format", "audacity", "--out", str(tmp_path / "aud"))
    tracks = sorted((tmp_path / "aud").iterdir())
    assert len(tracks) == 3
    lines = tracks[1].read_text().splitlines() if "_s2" in tracks[1].name else tracks[0].read_text().splitlines()
    start, end, label = lines[1].split("\t")
    assert (float(start), float(end)) == (5.0, 15.0) and label.startswith("wood frog (")


def test_tidy_csv_has_provenance_for_every_row(two_stream_db: Path, tmp_path: Path) -> None:
    invoke("export", "--db", str(two_stream_db), "--format", "csv", "--out", str(tmp_path / "d.csv"))
    with open(tmp_path / "d.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 23
    first = rows[0]
    assert first["utc"] == "2024-05-01T21:00:00.000Z" and first["config_hash"] == "cfg-1"
    assert all(r["settings_hash"] and r["boot_id"] and r["source_file"].endswith(".csv") for r in rows)
    invoke("export", "--db", str(two_stream_db), "--format", "parquet", "--out", str(tmp_path / "d.parquet"))
    assert (tmp_path / "d.parquet").read_bytes()[:4] == b"PAR1"


def test_unknown_export_format_is_one_clear_line(two_stream_db: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["logs", "export", "--db", str(two_stream_db), "--format", "csv,xlsx",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown --format 'xlsx' for logs export" in result.output
    assert "hint: logs export writes csv, raven, audacity, birdnet, occupancy, parquet" in result.output


def test_units_whose_names_sanitise_alike_get_their_own_tables(tmp_path: Path) -> None:
    """``u1`` and ``u1_`` are one file name on a card; once they overwrote each other's table."""
    write_card(tmp_path / "a", "u1", minutes=1, boot_info={"band_hz": [50.0, 14000.0]})
    write_card(tmp_path / "b", "u1_", minutes=2)
    db = tmp_path / "db.duckdb"
    collect([tmp_path / "a", tmp_path / "b"], db)
    out = tmp_path / "all"
    invoke("export", "--db", str(db), "--format", "raven,audacity,csv,parquet", "--out", str(out))
    raven = sorted(out.glob("*.BioLingual.selection.table.txt"))
    tracks = sorted(out.glob("*.audacity-labels.txt"))
    assert len(raven) == 2 and len(tracks) == 2
    assert (out / "detections.csv").exists() and (out / "detections.parquet").read_bytes()[:4] == b"PAR1"
    loaded = {path.name: crowsetta.formats.by_name("raven").from_file(path, annot_col="Species") for path in raven}
    assert sorted(len(table.to_bbox()) for table in loaded.values()) == [11, 23]  # 1 and 2 minutes of windows
    one = loaded["u1.BioLingual.selection.table.txt"].to_bbox()[0]
    assert (one.low_freq, one.high_freq) == (50.0, 14000.0)  # the band the unit's model heard
    other = next(table for name, table in loaded.items() if name != "u1.BioLingual.selection.table.txt")
    assert other.to_bbox()[0].high_freq == RATE / 2  # a boot that did not record its band: 0 to Nyquist
    for track in tracks:
        labels = crowsetta.formats.by_name("aud-seq").from_file(track)
        assert len(labels.labels) in (11, 23) and labels.labels[0] == "toad (1.5)"


def test_summary_table_and_plots(two_stream_db: Path, tmp_path: Path) -> None:
    card = tmp_path / "c"
    log = CardLog(card, UnitIdentity("AM-03", "marsh-2024"), RATE, {})
    log.open_stream(T0, 0, "ntp")
    log.event("xrun", sample=0, count=4)
    log.event("xrun", sample=HOP)
    log.detections([event_at(0, "toad")])
    log.close()
    collect([card], two_stream_db)
    invoke("summary", "--db", str(two_stream_db), "--out", str(tmp_path / "summary"))
    with open(tmp_path / "summary" / "SUMMARY.csv", encoding="utf-8") as handle:
        units = {row["unit_id"]: row for row in csv.DictReader(handle)}
    assert sorted(units) == ["AM-01", "AM-02", "AM-03"]
    am01 = units["AM-01"]
    assert float(am01["effort_h"]) == pytest.approx(4 / 60, abs=5e-4) and am01["effort_gaps"] == "1"
    assert float(am01["max_temperature_c"]) == 47.5 and am01["detections"] == "46"
    assert units["AM-03"]["xruns"] == "5"
    for name in ("detections_by_hour.png", "effort_over_time.png"):
        data = (tmp_path / "summary" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_raven_begin_file_names_the_clip_on_the_card_when_there_is_one(tmp_path: Path) -> None:
    card = tmp_path / "card"
    log = CardLog(card, UnitIdentity("AM-05", "marsh-2024"), RATE, {})
    log.open_stream(T0, 0, "ntp")
    clipped, plain = event_at(3 * HOP, "toad"), event_at(6 * HOP, "wood frog")
    log.effort(0, 8 * HOP)
    log.detections([clipped, plain])
    pre_roll = RATE // 2
    saved = log.save_clip(clipped, np.zeros(2 * HOP + 2 * pre_roll, np.float32), clipped.start_sample - pre_roll)
    log.close()
    assert saved is not None
    db = tmp_path / "db.duckdb"
    collect([card], db)
    invoke("export", "--db", str(db), "--format", "raven", "--out", str(tmp_path / "raven"))
    with_clip, without = read_tsv(tmp_path / "raven" / "AM-05.BioLingual.selection.table.txt")
    assert Path(with_clip["Begin Path"]) == saved.resolve() and with_clip["Begin File"] == saved.name
    assert float(with_clip["File Offset (s)"]) == pytest.approx(0.5), "the detection starts after the pre-roll"
    assert float(with_clip["Begin Time (s)"]) == pytest.approx(15.0)
    assert without["Begin Path"] == "" and without["Begin File"].endswith("_s1")
