"""Season archive on real recordings: analyze --embeddings -> collect -> rescore / search, against analyze itself."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import crowsetta
import numpy as np
import pytest
from typer.testing import CliRunner

from desk.archive.store import archive_root
from desk.archive.windows import open_store
from desk.collect.database import connect
from desk.collect.ingest import collect
from edge.batch.analyze import AnalyzeOptions, analyze_paths
from edge.batch.tables import RAVEN_COLUMNS
from edge.cli import app
from edge.model.bundle import open_bundle

REPO = Path(__file__).resolve().parents[3]
RATE = 48_000
NEAR_TIE = 2e-3
"""Cosine gap between two labels below which fp16 rounding may swap their order."""
FP16_COSINE = 5e-4
"""Largest cosine change the archive's float16 storage makes on the tiny model's unit vectors."""


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path, example_labels: tuple[Path, Path],
           toad_in_night: Path) -> dict[str, Path]:
    """analyze with --embeddings (top 2 labels), collected into a season database."""
    root = tmp_path_factory.mktemp("season")
    recording = toad_in_night.resolve()
    analyze_paths([recording], example_labels[0], example_bundle, root / "analyze",
                  AnalyzeOptions(top_k=2, embeddings_dir=root / "recordings"))
    db = root / "season.duckdb"
    collect([root / "recordings"], db)
    return {"root": root, "db": db, "recording": recording, "analyze": root / "analyze" / "detections.csv"}


def query(db: Path, sql: str) -> list[tuple]:
    con = connect(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_collect_archives_every_window_once(season: dict[str, Path]) -> None:
    db = season["db"]
    windows = query(db, "SELECT source_path, source_offset, start_utc, model_sha256 FROM windows ORDER BY 2")
    assert [w[1] for w in windows] == list(range(0, 50 * RATE + 1, 5 * RATE))
    assert {w[0] for w in windows} == {str(season["recording"])} and windows[0][2] is None  # no time in the name
    shards = list(archive_root(db).rglob("*.parquet"))
    assert len(shards) == 1 and shards[0].parent.name == "day=unknown"
    again = collect([season["root"] / "recordings"], db)
    assert again.added["windows"] == 0 and query(db, "SELECT count(*) FROM windows")[0][0] == 11


def test_parquet_shard_holds_a_fixed_size_list_of_float16(season: dict[str, Path]) -> None:
    import pyarrow.parquet as pq

    (shard,) = archive_root(season["db"]).rglob("*.parquet")
    field = pq.read_schema(shard).field("embedding")
    assert str(field.type.value_type) == "halffloat" and field.type.list_size > 1


def test_read_embeddings_returns_unit_rows_in_the_order_asked(season: dict[str, Path]) -> None:
    ids = [w[0] for w in query(season["db"], "SELECT window_id FROM windows ORDER BY window_id")]
    with open_store(season["db"]) as store:
        forward = store.embeddings(ids)
        backward = store.embeddings(ids[::-1])
    np.testing.assert_allclose(np.linalg.norm(forward, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(forward[::-1], backward)


def test_rescore_equals_analyze_window_for_window(season: dict[str, Path], example_bundle: Path,
                                                  example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    cli("logs", "rescore", "--db", str(season["db"]), "--bundle", str(example_bundle), "--labels",
        str(example_labels[0]), "--out", str(tmp_path), "--top-k", "2")
    expected, got = rows(season["analyze"]), rows(tmp_path / "detections.csv")
    assert len(got) == len(expected) == 22
    for want, have in zip(expected, got):
        assert (have["file"], have["start_s"], have["end_s"]) == (want["file"], want["start_s"], want["end_s"])
        assert float(have["cosine"]) == pytest.approx(float(want["cosine"]), abs=NEAR_TIE)
    # top-1 identical except where the two labels are within fp16 rounding of each other
    for index in range(0, len(expected), 2):
        gap = abs(float(expected[index]["cosine"]) - float(expected[index + 1]["cosine"]))
        if gap > NEAR_TIE:
            assert got[index]["label"] == expected[index]["label"]
    # one writer: the same dialect, bytes and all, in every cell but those fp16 rounding may change
    csv_want, csv_have = season["analyze"].read_bytes(), (tmp_path / "detections.csv").read_bytes()
    assert csv_have.count(b"\n") == csv_want.count(b"\n") and b"\r" not in csv_have + csv_want
    assert csv_have.splitlines()[0] == csv_want.splitlines()[0]
    for want_line, have_line in zip(csv_want.splitlines()[1:], csv_have.splitlines()[1:]):
        want_cells, have_cells = want_line.split(b","), have_line.split(b",")
        assert [have_cells[i] for i in (0, 1, 2, 6, 7, 8)] == [want_cells[i] for i in (0, 1, 2, 6, 7, 8)]
    (raven,) = tmp_path.glob("*.txt")
    assert raven.name == "toad_at_40s.BioLingual.selection.table.txt"
    want_lines = (season["analyze"].parent / raven.name).read_bytes().split(b"\n")
    have_lines = raven.read_bytes().split(b"\n")
    assert have_lines[0] == want_lines[0] and len(have_lines) == len(want_lines) and have_lines[-1] == b""
    for want_line, have_line in zip(want_lines[1:], have_lines[1:]):
        want_cells, have_cells = want_line.split(b"\t"), have_line.split(b"\t")
        unrounded = [i for i in range(len(want_cells)) if i not in (7, 8)]  # all but species and score
        assert [have_cells[i] for i in unrounded] == [want_cells[i] for i in unrounded]
    for table in (raven, season["analyze"].parent / raven.name):
        loaded = crowsetta.formats.by_name("raven").from_file(table, annot_col="Species")
        assert len(loaded.to_bbox()) == 22 and loaded.to_bbox()[0].low_freq > 0


def test_rescore_equals_analyze_with_thresholds_and_confidence(season: dict[str, Path], example_bundle: Path,
                                                               example_labels: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    """With a global threshold and an installed confidence (a fitted threshold and P(correct) for toad) in play,
    rescore keeps and drops exactly the labels analyze keeps, with the same scores, ranks and p_correct."""
    import shutil

    from desk.review.confidence import install_confidence
    from edge.model.space import embedding_space
    from edge.scoring.labels import read_labels

    scores = {(r["start_s"], r["label"]): float(r["score"]) for r in rows(season["analyze"])}
    toad = sorted(v for (_, label), v in scores.items() if label == "toad")
    night = sorted(v for (_, label), v in scores.items() if label == "night")
    scale = open_bundle(example_bundle).manifest.logit_scale

    def cut(values: list[float]) -> float:
        """A threshold in the widest gap between two inner scores: far from every score, dropping some rows."""
        low, high = max(zip(values[1:-2], values[2:-1]), key=lambda pair: pair[1] - pair[0])
        assert high - low > 2 * FP16_COSINE * scale
        return (low + high) / 2

    toad_limit, global_limit = cut(toad), cut(night)
    bundle = Path(shutil.copytree(example_bundle, tmp_path / "bundle"))
    fit = {"fitted": True, "a": -2.0, "b": 0.3, "thresholds": {"0.9": {"score": toad_limit, "ci": [0, 0]}}}
    install_confidence(bundle, {"schema": 1, "model_sha256": embedding_space(open_bundle(bundle)),
                                "labels_key": read_labels(example_labels[0]).key, "score_mode": "logit",
                                "target": "0.9", "targets": ["0.9"], "labels": {"toad": fit}})
    analyze_paths([season["recording"]], example_labels[0], bundle, tmp_path / "analyze",
                  AnalyzeOptions(top_k=2, threshold=global_limit, embeddings_dir=tmp_path / "recordings"))
    collect([tmp_path / "recordings"], tmp_path / "season.duckdb")
    cli("logs", "rescore", "--db", str(tmp_path / "season.duckdb"), "--bundle", str(bundle), "--labels",
        str(example_labels[0]), "--out", str(tmp_path / "rescored"), "--top-k", "2", "--threshold", str(global_limit))
    want, got = rows(tmp_path / "analyze" / "detections.csv"), rows(tmp_path / "rescored" / "detections.csv")
    kept = {(r["start_s"], r["label"]) for r in want}
    assert {k for k, v in scores.items() if v >= (toad_limit if k[1] == "toad" else global_limit)} == kept
    assert 0 < len(kept) < len(scores) and any(k[1] == "toad" for k in kept)  # both thresholds dropped rows
    assert [(r["file"], r["start_s"], r["label"], r["rank"]) for r in got] == \
        [(r["file"], r["start_s"], r["label"], r["rank"]) for r in want]
    for have, expected in zip(got, want):
        assert float(have["score"]) == pytest.approx(float(expected["score"]), abs=FP16_COSINE * scale)
        assert (have["p_correct"] == "") == (expected["p_correct"] == "") == (have["label"] != "toad")
        if have["p_correct"]:
            assert float(have["p_correct"]) == pytest.approx(float(expected["p_correct"]), abs=1e-3)


def test_rescore_format_picks_the_tables(season: dict[str, Path], example_bundle: Path,
                                        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "detections.csv").write_text("from an earlier rescore")
    cli("logs", "rescore", "--db", str(season["db"]), "--bundle", str(example_bundle), "--labels",
        str(example_labels[0]), "--out", str(tmp_path), "--format", "audacity,raven")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toad_at_40s.BioLingual.selection.table.txt",
                                                          "toad_at_40s.audacity-labels.txt"]  # stale csv gone
    track = crowsetta.formats.by_name("aud-seq").from_file(tmp_path / "toad_at_40s.audacity-labels.txt")
    assert len(track.labels) == 11 and track.start_times[1] == pytest.approx(5.0)
    result = CliRunner().invoke(app, ["logs", "rescore", "--db", str(season["db"]), "--bundle", str(example_bundle),
                                      "--labels", str(example_labels[0]), "--out", str(tmp_path), "--format", "xlsx"])
    assert result.exit_code == 2 and "unknown --format 'xlsx' for logs rescore" in result.output
    assert "csv, raven, audacity" in result.output


def test_search_by_example_finds_its_own_window(season: dict[str, Path], example_bundle: Path,
                                                tmp_path: Path) -> None:
    for start_s in (40.0, 42.0):  # the toad (the night background before it repeats every 10 s)
        out = tmp_path / str(start_s)
        cli("logs", "search", "--db", str(season["db"]), "--bundle", str(example_bundle), "--example",
            f"{season['recording']}@{start_s}", "--top", "3", "--out", str(out), "--clips")
        hits = rows(out / "hits.csv")
        assert abs(float(hits[0]["source_offset_s"]) - start_s) <= 5.0  # within one hop
        if start_s == 40.0:
            assert float(hits[0]["source_offset_s"]) == 40.0 and float(hits[0]["score"]) > 0.999
        assert len(list((out / "clips").glob("*.wav"))) == 3
        raven = crowsetta.formats.by_name("raven").from_file(out / "hits.BioLingual.selection.table.txt",
                                                             annot_col="Species")
        assert [box.onset for box in raven.to_bbox()] == [float(h["start_s"]) for h in hits]  # analyze's schema
        assert raven.to_bbox()[0].label == f"like {season['recording']}@{start_s}"
        assert set(raven.df["Begin Path"]) == {str(season["recording"])}
    cli("logs", "search", "--db", str(season["db"]), "--bundle", str(example_bundle), "--example",
        f"{season['recording']}@40", "--top", "3", "--out", str(tmp_path / "exact"), "--exact")
    assert rows(tmp_path / "exact" / "hits.csv")[0]["source_offset_s"] == "40.000"


def test_search_by_text_through_the_checkpoint(season: dict[str, Path], example_bundle: Path,
                                               tiny_checkpoint: Path, tmp_path: Path) -> None:
    cli("logs", "search", "--db", str(season["db"]), "--bundle", str(example_bundle), "--text", "toad trill",
        "--model", str(tiny_checkpoint), "--top", "4", "--out", str(tmp_path))
    hits = rows(tmp_path / "hits.csv")
    assert [h["rank"] for h in hits] == ["1", "2", "3", "4"]
    scores = [float(h["score"]) for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_search_by_text_through_the_bundles_text_encoder(season: dict[str, Path], text_bundle: Path,
                                                         tiny_checkpoint: Path, tmp_path: Path) -> None:
    for route, extra in (("tower", []), ("checkpoint", ["--model", str(tiny_checkpoint)])):
        cli("logs", "search", "--db", str(season["db"]), "--bundle", str(text_bundle), "--text", "toad trill",
            "--top", "4", "--out", str(tmp_path / route), *extra)
    tower, checkpoint = rows(tmp_path / "tower" / "hits.csv"), rows(tmp_path / "checkpoint" / "hits.csv")
    assert [h["window_id"] for h in tower] == [h["window_id"] for h in checkpoint]
    for a, b in zip(tower, checkpoint):
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-3)


def test_rescore_embeds_labels_the_bundle_lacks_with_its_text_encoder(season: dict[str, Path], text_bundle: Path,
                                                                      example_bundle: Path, tmp_path: Path) -> None:
    new = tmp_path / "new.txt"
    new.write_text("frog chorus\nwind in reeds\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["logs", "rescore", "--db", str(season["db"]), "--bundle", str(example_bundle),
                                      "--labels", str(new), "--out", str(tmp_path / "no-tower")])
    assert result.exit_code == 2 and "biolingual-export labels" in result.output  # one line naming the command
    cli("logs", "rescore", "--db", str(season["db"]), "--bundle", str(text_bundle), "--labels", str(new),
        "--out", str(tmp_path / "tower"))
    assert {r["label"] for r in rows(tmp_path / "tower" / "detections.csv")} <= {"frog chorus", "wind in reeds"}
    assert len(rows(tmp_path / "tower" / "detections.csv")) == 11


def test_search_needs_exactly_one_query(season: dict[str, Path], example_bundle: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["logs", "search", "--db", str(season["db"]), "--bundle", str(example_bundle),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one of --text and --example" in result.output


def test_rescore_with_the_unit_config_reproduces_the_units_events(example_bundle: Path,
                                                                   example_labels: tuple[Path, Path],
                                                                   toad_in_night: Path, tmp_path: Path) -> None:
    config = tmp_path / "unit.yaml"
    config.write_text(f"model:\n  bundle: {example_bundle}\nanalysis:\n  labels: {example_labels[0]}\n"
                      "  score_mode: softmax\n  threshold: 0.5\n  hysteresis: 0.05\n  confirm_n: 2\n  confirm_m: 2\n"
                      "unit:\n  unit_id: marsh-01\n", encoding="utf-8")
    card = tmp_path / "card"
    result = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(config), "--log-dir", str(card),
                             "--input", str(toad_in_night), "--fast", "--heartbeat", "3600"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "card.duckdb"
    collect([card], db)
    logged = query(db, "SELECT label, start_sample, end_sample, round(score, 4) FROM detections ORDER BY 2, 1")
    assert logged
    cli("logs", "rescore", "--db", str(db), "--bundle", str(example_bundle), "--labels", str(example_labels[0]),
        "--out", str(tmp_path / "rescored"), "--config", str(config))
    rescored = [(r["label"], round(float(r["start_s"]) * RATE), round(float(r["end_s"]) * RATE),
                 round(float(r["score"]), 4)) for r in rows(tmp_path / "rescored" / "detections.csv")]
    assert [r[:3] for r in rescored] == [r[:3] for r in logged]
    np.testing.assert_allclose([r[3] for r in rescored], [r[3] for r in logged], atol=5e-3)
    cli("logs", "export", "--db", str(db), "--format", "raven", "--out", str(tmp_path / "exported"))
    (exported,) = (tmp_path / "exported").iterdir()
    (stream_table,) = (tmp_path / "rescored").glob("*.selection.table.txt")
    frontend = open_bundle(example_bundle).manifest.frontend
    for table in (exported, stream_table):  # the unit's own events and the rescored ones: one schema, one band
        loaded = crowsetta.formats.by_name("raven").from_file(table, annot_col="Species")
        assert [b.label for b in loaded.to_bbox()] == [r[0] for r in logged]
        assert {(b.low_freq, b.high_freq) for b in loaded.to_bbox()} == {(frontend.f_min, frontend.f_max)}
        assert table.read_text().splitlines()[0].split("\t") == list(RAVEN_COLUMNS)


def test_half_precision_cosines_match_numpy() -> None:
    from desk.archive.half_matmul import cosines

    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((300, 64)) * 0.1).astype(np.float16)
    queries = rng.standard_normal((64, 5)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=0)
    full = rows.astype(np.float32)
    expected = (full / np.linalg.norm(full, axis=1, keepdims=True)) @ queries
    np.testing.assert_allclose(cosines(rows, queries), expected, atol=1e-6)  # ONNX Runtime kernel
    np.testing.assert_allclose(cosines(full, queries), expected, atol=1e-6)  # numpy path


def test_half_precision_cosines_do_not_depend_on_the_blocks() -> None:
    from desk.archive import half_matmul

    rng = np.random.default_rng(4)
    rows = rng.standard_normal((3 * half_matmul.BLOCK_ROWS + 80, 512)).astype(np.float16)
    queries = rng.standard_normal((512, 100)).astype(np.float32)
    blocked = half_matmul.cosines(rows, queries)
    whole = half_matmul._session_of(half_matmul.GRAPH)
    dots, squares = whole.run(None, {"x": rows, "q": queries})  # the whole page in one call
    assert np.array_equal(blocked, dots / np.sqrt(squares))


def test_the_stored_half_precision_graph_is_the_one_onnx_builds() -> None:
    from onnx import TensorProto, checker, helper

    from desk.archive.half_matmul import GRAPH

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", "d"]),
              helper.make_tensor_value_info("q", TensorProto.FLOAT, ["d", "k"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "k"]),
               helper.make_tensor_value_info("n", TensorProto.FLOAT, ["n", 1])]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "q"], ["y"]),
             helper.make_node("ReduceSumSquare", ["xf", "axes"], ["n"], keepdims=1)]
    model = helper.make_model(helper.make_graph(nodes, "half_matmul", inputs, outputs, [axes]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    checker.check_model(model)
    assert model.SerializeToString() == GRAPH


def test_the_stored_dot_product_graph_is_the_one_onnx_builds() -> None:
    from onnx import TensorProto, checker, helper

    from desk.archive.half_matmul import DOT_GRAPH

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", "d"]),
              helper.make_tensor_value_info("q", TensorProto.FLOAT, ["d", "k"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "k"])]
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "q"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "half_dot", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    checker.check_model(model)
    assert model.SerializeToString() == DOT_GRAPH


def test_dot_products_and_norms_are_the_cosines_bits_in_any_company() -> None:
    """A row's dot product and norm do not depend on the rows beside it in the call (ranking by dot products
    gives the held rows a norm in a call of their own): each equals the full scan's, bit for bit."""
    from desk.archive import half_matmul

    rng = np.random.default_rng(5)
    rows = (rng.standard_normal((10 * half_matmul.BLOCK_ROWS + 333, 512)) * rng.uniform(0.3, 2, (1, 1))).astype(
        np.float16)
    query = rng.standard_normal((512, 1)).astype(np.float32)
    query /= np.linalg.norm(query)
    full = half_matmul.cosines(rows, query)
    products = half_matmul.dots(rows, query)  # in calls of 4 096, 4 096, 1 024 and 1 357 rows
    assert half_matmul.joined_blocks(len(rows))[-2:] == [(8192, 9216), (9216, len(rows))]
    numerators = half_matmul._blockwise(half_matmul._session_of(half_matmul.GRAPH), ["y"], rows, query)[0]
    assert np.array_equal(products, numerators)  # the full scan's products, in its calls of 1 024 (1 357) rows
    for count in (1, 3, 37, 700, 1500):
        picked = np.sort(rng.choice(len(rows), count, replace=False))
        alone = half_matmul.divided(products[picked].copy(), half_matmul.square_norms(rows[picked], query))
        assert np.array_equal(alone, full[picked])


def test_a_database_without_embeddings_is_a_one_line_error(example_bundle: Path, example_labels: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    connect(db).close()  # a collection database from before the archive: no windows table
    for command in (["rescore", "--labels", str(example_labels[0])], ["search", "--example", f"{db}@0"]):
        result = CliRunner().invoke(app, ["logs", *command, "--db", str(db), "--bundle", str(example_bundle),
                                          "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and "holds no window embeddings" in result.output, result.output
        assert "Traceback" not in result.output
