"""What an exact search pays before it ranks: one read of the database's catalog, no module it does not use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from desk.archive.windows import open_store
from desk.collect.ingest import collect
from edge.batch.analyze import AnalyzeOptions, analyze_paths

CATALOG = ("information_schema", "duckdb_columns", "duckdb_tables")
"""What a query that reads the database's catalog names."""
UNUSED = ("pandas", "soundfile", "desk.collect.cards", "desk.ray_engine", "ray")
"""Modules an exact local search has no use for."""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path, example_labels: tuple[Path, Path],
            toad_in_night: Path) -> Path:
    """A collected archive of one real recording."""
    root = tmp_path_factory.mktemp("startup")
    analyze_paths([toad_in_night.resolve()], example_labels[0], example_bundle, root / "analyze",
                  AnalyzeOptions(embeddings_dir=root / "recordings"))
    collect([root / "recordings"], root / "season.duckdb")
    return root / "season.duckdb"


class Counting:
    """A DuckDB connection that records the SQL it is given."""

    def __init__(self, con: Any, seen: list[str]) -> None:
        self._con, self._seen = con, seen

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._seen.append(sql)
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def test_opening_the_archive_reads_the_catalog_once(archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    seen: list[str] = []
    real_connect = duckdb.connect

    def counting(path: str, *args: Any, **kwargs: Any) -> Any:
        con = real_connect(path, *args, **kwargs)
        return Counting(con, seen) if path == str(archive) else con

    monkeypatch.setattr(duckdb, "connect", counting)
    with open_store(archive) as store:  # read-only: the collection's and the archive's tables both checked
        assert store.count() > 0
    assert len([sql for sql in seen if any(name in sql for name in CATALOG)]) == 1, seen


def test_an_exact_search_imports_no_module_it_does_not_use(archive: Path, example_bundle: Path) -> None:
    script = f"""
import json, sys
import numpy as np
from pathlib import Path
from desk.archive.search import search
from desk.archive.windows import WindowFilter
from edge.model.bundle import open_bundle
query = np.random.default_rng(0).standard_normal(512).astype(np.float32)
hits = search(Path({str(archive)!r}), open_bundle(Path({str(example_bundle)!r})), query, 3, WindowFilter(),
              approximate=False)
print(json.dumps({{"hits": len(hits), "imported": [m for m in {UNUSED!r} if m in sys.modules]}}))
"""
    with open_store(archive) as store:
        dim = store.embeddings(store.match(limit=1)).shape[1]
    done = subprocess.run([sys.executable, "-c", script.replace("512", str(dim))], capture_output=True, text=True,
                          check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"hits": 3, "imported": []}
