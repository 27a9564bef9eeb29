"""Several collection databases (years, sites, teams) read as one: ``--db`` repeated on ``logs report``,
``summary``, ``export``, ``review`` and ``train-head``.

:func:`connect_seasons` opens one database as :func:`desk.collect.database.connect` does, or attaches several
read-only to an in-memory DuckDB whose views (``detections``, ``effort``, ``windows``, ...) are the union of theirs,
so every query of the report, the summary and the exports reads them as one collection. Window ids are translated
as :class:`desk.archive.many.ManyStores` translates them (``place << 40 | own id``), so ids never collide and
agree with the archive's.

A unit id met in two databases is the same recorder (a unit's seasons add up, per unit); a boot (unit and boot id)
met in two databases is the same card collected twice, and is refused: counted twice, it would double the unit's
effort and detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from desk.archive.many import ID_BITS
from desk.collect.database import UNIT_EFFORT_VIEW, CollectError, connect, run

if TYPE_CHECKING:
    import duckdb

BOOT_TABLES = ("boots", "embedding_segments", "detections", "effort")
"""Tables whose (unit, boot) pairs say which card data a database holds."""


def distinct(paths: Sequence[Path]) -> list[Path]:
    """The databases named, each once (the same file twice is one database)."""
    return list(dict.fromkeys(Path(p).resolve() for p in paths))


def connect_seasons(paths: Path | Sequence[Path]) -> duckdb.DuckDBPyConnection:
    """A read-only connection to one collection database, or to several as one (see the module docstring)."""
    databases = distinct([paths] if isinstance(paths, Path) else paths)
    if len(databases) == 1:
        return connect(databases[0], read_only=True)
    for path in databases:  # the same checks and one-line errors as a single database
        connect(path, read_only=True).close()
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        run(con, "SET TimeZone = 'UTC'")
        tables: dict[str, list[int]] = {}
        for place, path in enumerate(databases):
            escaped = str(path).replace("'", "''")
            run(con, f"ATTACH '{escaped}' AS season{place} (READ_ONLY)")
            for (name,) in run(con, "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND "
                                    "table_type = 'BASE TABLE' ORDER BY table_name", [f"season{place}"]):
                tables.setdefault(name, []).append(place)
        _refuse_shared_boots(con, tables, databases)
        for name, places in tables.items():
            parts = [f"SELECT {_columns(name, place)} FROM season{place}.{name}" for place in places]
            run(con, f'CREATE TEMP VIEW "{name}" AS ' + " UNION ALL BY NAME ".join(parts))
        if "effort" in tables:
            run(con, UNIT_EFFORT_VIEW.replace("CREATE OR REPLACE VIEW", "CREATE TEMP VIEW"))
    except BaseException:
        con.close()
        raise
    return con


def _columns(table: str, place: int) -> str:
    """The select list of one database's table: its window ids moved to its place (as the archive moves them)."""
    return f"* REPLACE ({place} << {ID_BITS} | window_id AS window_id)" if table == "windows" else "*"


def _refuse_shared_boots(con: duckdb.DuckDBPyConnection, tables: dict[str, list[int]],
                         databases: list[Path]) -> None:
    """A typed error naming the first boot held by two of the databases."""
    parts = [f"SELECT DISTINCT unit_id, boot_id, {place} AS place FROM season{place}.{name}"
             for name in BOOT_TABLES for place in tables.get(name, [])]
    if not parts:
        return
    shared = run(con, f"""SELECT unit_id, boot_id, min(place), max(place) FROM ({" UNION ".join(parts)})
                          GROUP BY ALL HAVING count(DISTINCT place) > 1 ORDER BY ALL LIMIT 1""")
    if shared:
        unit, boot, first, second = shared[0]
        raise CollectError(f"boot {boot} of unit {unit} is in both {databases[first]} and {databases[second]}: the "
                           "same card collected twice would count twice",
                           "collect each card into one database only, or pass only one of the two")
