"""``logs export --format hoplite``: a real archive (a unit's card + recordings analysed on disk) and its review
verdicts, opened with perch-hoplite's own loader and searched with its own brute-force search.

perch-hoplite is a test-only install (`.ci/run`: ``pip install --no-deps perch-hoplite==1.0.2``; its database
code needs absl-py, etils and ml-collections from the ``test`` extra); never on a unit, never needed by the export.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from desk.archive.many import ID_BITS
from desk.archive.search import example_query
from desk.archive.windows import WindowBatch, normalised, open_store
from edge.cli import app
from edge.model.bundle import open_bundle

if os.environ.get("CI"):  # CI installs it: a missing reader is a failure there, not a skip
    from perch_hoplite.db import brutalism, datatypes, db_loader, score_functions
else:
    db_loader = pytest.importorskip("perch_hoplite.db.db_loader",
                                    reason="pip install --no-deps perch-hoplite==1.0.2 (see .ci/run)")
    from perch_hoplite.db import brutalism, datatypes, score_functions

RATE = 48_000
MINUTE = "kitzeslab__opensoundscape/1min.wav"
TIE = 2.0**-11
"""hoplite's dot product of a stored float16 vector is our cosine times that vector's norm: 1 within float16
rounding (relative error at most 2^-11; 1.9e-4 with the tiny model's 32 dimensions): windows whose cosines differ
by less may swap places."""


def cli(*args: str, code: int = 0) -> str:
    """The CLI in-process; its output with line wrapping undone (rich wraps at the terminal's width)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return " ".join(result.output.split())


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path, example_labels: tuple[Path, Path],
           toad_in_night: Path, shared_audio: Path) -> dict[str, Any]:
    """One unit's card (`run --input`) and one site's recording (`analyze --embeddings`) collected into one
    archive; a review of it with scripted verdicts; the archive exported to hoplite."""
    root = tmp_path_factory.mktemp("hoplite")
    bundle, labels = example_bundle, example_labels[0]
    recording = root / "sd" / "u1" / "20240501_210000.WAV"
    recording.parent.mkdir(parents=True)
    shutil.copy(shared_audio / MINUTE, recording)
    cli("run", "--profile", "generic-x86", "--labels", str(labels), "--bundle", str(bundle), "--log-dir",
        str(root / "card"), "--precision", "fp32", "--threshold", "-100", "--input", str(recording), "--fast",
        "--set", "unit.unit_id=u1", "--set", "storage.clips.mode='off'", "--set", "analysis.background_prompts=[]",
        "--set", "analysis.privacy_prompts=[]", "--set", "analysis.hop_s=2.5")
    site = root / "disk" / "marsh-02"
    site.mkdir(parents=True)
    shutil.copy(toad_in_night, site / "20240502_210000.wav")
    cli("analyze", str(site), "--labels", str(labels), "--bundle", str(bundle), "--out", str(root / "analyze"),
        "--embeddings", str(root / "recordings"), "--hop", "2.5")
    db = root / "season.duckdb"
    cli("logs", "collect", str(root / "card"), str(root / "recordings"), "--into", str(db))
    with open_store(db, writable=True) as store:  # a unit on a microphone: its stream has no audio file
        space = next(iter(store.spaces()))
        dim = store.embeddings(store.match()[:1]).shape[1]
        store.insert(microphone_windows(space, dim, np.random.default_rng(3)))

    cli("logs", "review", "--db", str(db), "--bundle", str(bundle), "--labels", str(labels), "--per-label", "9",
        "--out", str(root / "review"))
    review = rows_of(root / "review" / "review.csv")
    filled = fill(review, root / "review-done.csv")

    example = f"{toad_in_night}@41"
    cli("logs", "search", "--db", str(db), "--bundle", str(bundle), "--example", example, "--top", "10",
        "--exact", "--out", str(root / "hits"))
    out = root / "perch"
    said = cli("logs", "export", "--db", str(db), "--format", "hoplite", "--out", str(out), "--review", str(filled),
               "--reviewer", "alice", "--project", "marsh-2024")
    query = normalised(example_query(db, open_bundle(bundle), example)[None])[0]
    return {"db": db, "out": out, "said": said, "review": review, "filled": filled, "query": query,
            "hits": rows_of(root / "hits" / "hits.csv"), "recording": site / "20240502_210000.wav", "root": root,
            "example": example, "bundle": bundle, "labels": labels}


def fill(review: list[dict[str, str]], path: Path) -> Path:
    """``review`` with verdicts yes / no / unsure / left empty, in turn, written to ``path``."""
    for number, row in enumerate(review):
        row["verdict"] = ("yes", "no", "unsure", "")[number % 4]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(review[0]))
        writer.writeheader()
        writer.writerows(review)
    return path


@pytest.fixture(scope="module")
def seasons(season: dict[str, Any]) -> dict[str, Any]:
    """The same windows in two databases (the unit's card in one; the site's recording and the microphone in the
    other), reviewed as `--db card --db disk`, searched and exported to hoplite as `--db disk --db card`."""
    root = season["root"]
    card, disk = root / "card.duckdb", root / "disk.duckdb"
    cli("logs", "collect", str(root / "card"), "--into", str(card))
    cli("logs", "collect", str(root / "recordings"), "--into", str(disk))
    with open_store(disk, writable=True) as store:
        space = next(iter(store.spaces()))
        dim = store.embeddings(store.match()[:1]).shape[1]
        store.insert(microphone_windows(space, dim, np.random.default_rng(3)))
    both = ["--db", str(card), "--db", str(disk)]
    cli("logs", "review", *both, "--bundle", str(season["bundle"]), "--labels", str(season["labels"]),
        "--per-label", "9", "--out", str(root / "review-both"))
    review = rows_of(root / "review-both" / "review.csv")
    filled = fill(review, root / "review-both-done.csv")
    order = [disk, card]
    swapped = ["--db", str(disk), "--db", str(card)]
    cli("logs", "search", *swapped, "--bundle", str(season["bundle"]), "--example", season["example"], "--top", "10",
        "--exact", "--out", str(root / "hits-both"))
    out = root / "perch-both"
    said = cli("logs", "export", *swapped, "--format", "hoplite", "--out", str(out), "--review", str(filled))
    return {"order": order, "out": out, "said": said, "review": review, "hits": rows_of(root / "hits-both" /
                                                                                       "hits.csv")}


def microphone_windows(space: str, dim: int, rng: np.random.Generator, count: int = 6) -> WindowBatch:
    """Windows of a unit listening to a microphone (no source file) from 2024-05-03 21:00:05 UTC on."""
    starts = RATE * 5 + np.arange(count, dtype=np.int64) * 5 * RATE
    first = int(dt.datetime(2024, 5, 3, 21, 0, 5, tzinfo=dt.timezone.utc).timestamp() * 1e6)
    vectors = normalised(rng.standard_normal((count, dim)).astype(np.float32)).astype(np.float16)
    return WindowBatch(segment="mic.emb", unit_id="u3", deployment_id="reedbed", boot_id="boot-3",
                       sample_rate=RATE, model_sha256=space, source_path=None, card="/cards/u3",
                       stream=np.zeros(count, np.int32), start_sample=starts, end_sample=starts + 10 * RATE,
                       start_utc_us=first + (starts - starts[0]) * 1_000_000 // RATE, clock_sync=["ntp"] * count,
                       vectors=vectors, embedding_space=space)


def open_hoplite(folder: Path) -> Any:
    """The export through hoplite's own loader (``DBConfig.load_db``), read-only."""
    from ml_collections import config_dict

    config = config_dict.ConfigDict({"db_path": str(folder), "readonly": True})
    return db_loader.DBConfig("sqlite_usearch", config).load_db()


def test_hoplite_opens_every_window_unit_recording_and_embedding(season: dict[str, Any]) -> None:
    hoplite = open_hoplite(season["out"])
    with open_store(season["db"]) as store:
        ids = store.match()
        meta = {r["window_id"]: r for r in store.windows(ids).to_pylist()}
        ours = store.embeddings(ids)
    assert hoplite.count_embeddings() == len(ids) > 40
    assert sorted(hoplite.match_window_ids()) == ids.tolist()  # window ids are the archive's own
    assert f"{len(ids)} window(s) of 3 unit(s)" in season["said"]

    deployments = hoplite.get_all_deployments()
    assert {(d.name, d.project) for d in deployments} == {(u, "marsh-2024") for u in ("u1", "marsh-02", "u3")}
    by_deployment = {d.id: d.name for d in deployments}
    recordings = {r.id: r for r in hoplite.get_all_recordings()}
    assert {(by_deployment[r.deployment_id], r.filename) for r in recordings.values()} == \
        {(m["unit_id"], m["recording"]) for m in meta.values()}
    on_disk = [r for r in recordings.values() if r.filename == str(season["recording"].resolve())]
    assert len(on_disk) == 1 and on_disk[0].datetime == dt.datetime(2024, 5, 2, 21, tzinfo=dt.timezone.utc)
    (stream,) = [r for r in recordings.values() if by_deployment[r.deployment_id] == "u3"]
    assert stream.filename == "u3/boot-3/stream0"  # a microphone's stream: named, no audio file
    assert stream.datetime == dt.datetime(2024, 5, 3, 21, tzinfo=dt.timezone.utc)  # the stream's sample 0

    for window_id in ids[:: max(1, len(ids) // 25)].tolist():
        window = hoplite.get_window(window_id)
        m = meta[window_id]
        assert recordings[window.recording_id].filename == m["recording"]
        assert window.offsets == [m["start"] / m["sample_rate"], m["stop"] / m["sample_rate"]]
        assert (window.boot_id, window.stream, window.start_sample) == (m["boot_id"], m["stream"], m["start_sample"])
    stored = hoplite.get_embeddings_batch(ids)  # saved by usearch from the build's file of vectors
    assert stored.dtype == np.float16
    np.testing.assert_allclose(stored.astype(np.float32), ours, atol=1e-3)
    assert not [p.name for p in season["out"].iterdir() if p.name.startswith(".")]  # the build's vectors are gone


def test_review_verdicts_are_hoplite_annotations_with_provenance(season: dict[str, Any]) -> None:
    hoplite = open_hoplite(season["out"])
    reviewed = [r for r in season["review"] if r["verdict"]]
    annotations = hoplite.get_all_annotations()
    assert len(annotations) == len(reviewed) > 6
    kinds = {"yes": datatypes.LabelType.POSITIVE, "no": datatypes.LabelType.NEGATIVE,
             "unsure": datatypes.LabelType.UNCERTAIN}
    wanted = sorted((int(r["window_id"]), r["label"], kinds[r["verdict"]]) for r in reviewed)
    found = []
    for row in reviewed:  # each verdict sits on its window's span, as hoplite finds a window's annotations
        window_id = int(row["window_id"])
        for note in hoplite.get_window_annotations(window_id, row["label"]):
            if note.offsets == hoplite.get_window(window_id).offsets:
                found.append((window_id, note.label, datatypes.LabelType(note.label_type)))
                assert note.provenance.startswith("biolingual-edge review; reviewer=alice; saved=")
                assert note.score == pytest.approx(float(row["score"]), rel=1e-5)
    assert sorted(set(found)) == sorted(set(wanted))
    positives = hoplite.count_each_label(datatypes.LabelType.POSITIVE)  # what agile modeling trains from
    assert positives == Counter(r["label"] for r in reviewed if r["verdict"] == "yes")


def test_hoplite_brute_force_search_finds_our_top_ten(season: dict[str, Any]) -> None:
    hoplite = open_hoplite(season["out"])
    ours = {int(h["window_id"]): float(h["score"]) for h in season["hits"]}
    assert len(ours) == 10
    ranked = list(ours)
    dot = score_functions.get_score_fn("dot")
    brute = sorted(brutalism.brute_search(hoplite, season["query"], 10, dot), key=lambda r: -r.sort_score)
    assert {int(r.window_id) for r in brute} == set(ours)
    for rank, found in enumerate(brute):  # the same order, but for windows tied within float16 rounding
        tied = {i for i in ranked if abs(ours[i] - ours[ranked[rank]]) <= TIE}
        assert int(found.window_id) in tied, (rank, [(int(r.window_id), r.sort_score) for r in brute], ours)
        assert found.sort_score == pytest.approx(ours[int(found.window_id)], abs=TIE)
    indexed = hoplite.search(season["query"], 10, approximate=True)  # its usearch HNSW index, re-ranked
    assert {int(r.window_id) for r in indexed} == set(ours)


def test_hoplite_goes_on_writing_the_export(season: dict[str, Any], tmp_path: Path) -> None:
    """Agile modeling adds windows and labels to the database it opened: ours takes them like one of its own."""
    from ml_collections import config_dict

    folder = Path(shutil.copytree(season["out"], tmp_path / "perch"))
    hoplite = db_loader.DBConfig("sqlite_usearch", config_dict.ConfigDict({"db_path": str(folder)})).load_db()
    before = hoplite.count_embeddings()
    archived = max(hoplite.match_window_ids())
    (recording,) = [r.id for r in hoplite.get_all_recordings() if r.filename.startswith("u3/")]
    window = hoplite.insert_window(recording, [40.0, 50.0], season["query"])
    hoplite.insert_annotation(recording, [40.0, 50.0], "toad", datatypes.LabelType.POSITIVE, "agile session")
    hoplite.commit()
    assert window == archived + 1  # new ids after the archive's own
    again = open_hoplite(folder)
    assert again.count_embeddings() == before + 1
    np.testing.assert_allclose(again.get_embedding(window).astype(np.float32), season["query"], atol=1e-3)
    assert [a.provenance for a in again.get_window_annotations(window)] == ["agile session"]


def test_the_export_is_on_the_disk_before_it_is_in_place(season: dict[str, Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Both files and the folder are fsync'd while the export is still the temp folder, then the rename is."""
    from desk.report.hoplite import export_hoplite
    from edge import durable

    out = tmp_path / "new" / "perch"
    synced: list[tuple[str, bool]] = []
    flush = durable.fsync_path
    monkeypatch.setattr(durable, "fsync_path", lambda path: (synced.append((str(path), out.exists())), flush(path)))
    export_hoplite(season["db"], out, [])
    temp = out.with_name(".tmp-perch")
    assert (str(temp / "hoplite.sqlite"), False) in synced and (str(temp / "usearch.index"), False) in synced
    assert (str(temp), False) in synced and synced[-1] == (str(out.parent), True)
    assert (str(out.parent), False) in synced  # the new folder's own entry, made durably too
    assert open_hoplite(out).count_embeddings() == open_hoplite(season["out"]).count_embeddings()


def test_bad_hoplite_exports_are_one_line_errors(season: dict[str, Any], tmp_path: Path) -> None:
    db = str(season["db"])
    said = cli("logs", "export", "--db", db, "--format", "hoplite", "--out", str(season["out"]), code=2)
    assert "already exists and is not an empty folder" in said and "hint:" in said
    said = cli("logs", "export", "--db", db, "--format", "hoplite,csv", "--out", str(tmp_path / "x"), code=2)
    assert "goes on its own" in said
    said = cli("logs", "export", "--db", db, "--format", "csv", "--review", str(season["filled"]), "--out",
               str(tmp_path / "y"), code=2)
    assert "belong to --format hoplite" in said
    other = tmp_path / "other-review.csv"  # a review made on another database: its window ids mean other windows
    rows = rows_of(season["filled"])
    rows[0]["unit_id"] = "somebody-else"
    with open(other, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    said = cli("logs", "export", "--db", db, "--format", "hoplite", "--out", str(tmp_path / "z"), "--review",
               str(other), code=2)
    assert "in the review but" in said and "hint:" in said
    assert not (tmp_path / "z").exists() and not list(tmp_path.glob(".tmp-*"))  # nothing half-written is left


def test_two_databases_go_to_hoplite_as_one(season: dict[str, Any], seasons: dict[str, Any]) -> None:
    hoplite = open_hoplite(seasons["out"])
    with open_store(seasons["order"]) as store:  # the databases as search reads them: ids translated alike
        ids = store.match()
        meta = {r["window_id"]: r for r in store.windows(ids).to_pylist()}
        ours = store.embeddings(ids)
    with open_store(season["db"]) as single:
        assert len(ids) == single.count()  # every window of both, once
    assert sorted(hoplite.match_window_ids()) == sorted(ids.tolist())
    assert {int(i) >> ID_BITS for i in ids} == {0, 1}  # ids that say which database, none colliding
    assert f"{len(ids)} window(s) of 3 unit(s)" in seasons["said"]
    deployments = {d.id: d for d in hoplite.get_all_deployments()}
    assert {(d.name, d.project) for d in deployments.values()} == {(u, "disk+card") for u in ("u1", "marsh-02", "u3")}
    recordings = {r.id: r for r in hoplite.get_all_recordings()}
    assert {(deployments[r.deployment_id].name, r.filename) for r in recordings.values()} == \
        {(m["unit_id"], m["recording"]) for m in meta.values()}
    for window_id in ids[:: max(1, len(ids) // 25)].tolist():
        window = hoplite.get_window(window_id)
        m = meta[window_id]
        assert (window.boot_id, window.start_sample) == (m["boot_id"], m["start_sample"])
        assert recordings[window.recording_id].season == str(seasons["order"][window_id >> ID_BITS])
    np.testing.assert_allclose(hoplite.get_embeddings_batch(ids).astype(np.float32), ours, atol=1e-3)


def test_verdicts_of_a_review_of_two_databases_land_on_their_windows_in_any_order(
        seasons: dict[str, Any]) -> None:
    """The review saw the databases as `card, disk`, the export as `disk, card`: the ids differ, the windows the
    verdicts sit on are the reviewed ones (found by their identity)."""
    hoplite = open_hoplite(seasons["out"])
    reviewed = [r for r in seasons["review"] if r["verdict"]]
    assert {int(r["window_id"]) >> ID_BITS for r in reviewed} == {0, 1}
    kinds = {"yes": datatypes.LabelType.POSITIVE, "no": datatypes.LabelType.NEGATIVE,
             "unsure": datatypes.LabelType.UNCERTAIN}
    found = []
    for note in hoplite.get_all_annotations():
        (window,) = [hoplite.get_window(w) for w in hoplite.match_window_ids()
                     if hoplite.get_window(w).recording_id == note.recording_id
                     and hoplite.get_window(w).offsets == note.offsets]
        unit = hoplite.get_deployment(hoplite.get_recording(note.recording_id).deployment_id).name
        found.append((unit, window.boot_id, window.stream, window.start_sample, note.label,
                      datatypes.LabelType(note.label_type)))
    wanted = []
    for row in reviewed:
        _, unit, boot, stream, start = row["window_key"].split("|")
        wanted.append((unit, boot, int(stream), int(start), row["label"], kinds[row["verdict"]]))
    assert sorted(found) == sorted(wanted) and len(wanted) > 6


def test_hoplite_brute_force_search_of_two_databases_finds_our_top_ten(season: dict[str, Any],
                                                                        seasons: dict[str, Any]) -> None:
    hoplite = open_hoplite(seasons["out"])
    ours = {int(h["window_id"]): float(h["score"]) for h in seasons["hits"]}
    assert len(ours) == 10 and {i >> ID_BITS for i in ours} == {0, 1}
    dot = score_functions.get_score_fn("dot")
    brute = brutalism.brute_search(hoplite, season["query"], 10, dot)
    assert {int(r.window_id) for r in brute} == set(ours)
    for found in brute:
        assert found.sort_score == pytest.approx(ours[int(found.window_id)], abs=TIE)


def test_a_review_by_id_only_is_refused_over_two_databases(season: dict[str, Any], seasons: dict[str, Any],
                                                           tmp_path: Path) -> None:
    old = tmp_path / "old-review.csv"  # as review.csv was before it named windows by identity
    rows = [{k: v for k, v in r.items() if k != "window_key"} for r in seasons["review"]]
    with open(old, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    said = cli("logs", "export", *[a for db in seasons["order"] for a in ("--db", str(db))], "--format", "hoplite",
               "--out", str(tmp_path / "perch"), "--review", str(old), code=2)
    assert "names its windows by id only" in said and "hint:" in said and "Traceback" not in said
