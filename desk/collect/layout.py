"""The collection database's layout: the version that wrote it, and whether this code can read it.

A database records its layout version in the one-row table ``layout``; one written before versions were
recorded is layout 1. Every opening checks it against the tables and columns this code reads (the ``CREATE``
statements of its schema): a newer layout, or a table or column missing, is one error naming the file, its layout
and the fix. ``logs collect`` (and ``logs live``) bring an older database up to date in place: the missing tables
are created, the missing columns added (empty for the rows already there), and the version stamped.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import EdgeError

if TYPE_CHECKING:
    import duckdb

LAYOUT_VERSION = 2
"""The layout this code writes and reads. 2: the version is recorded (table ``layout``)."""
UNVERSIONED = 1
"""The layout of a database written before layout versions were recorded."""
LAYOUT_SCHEMA = "CREATE TABLE IF NOT EXISTS layout (version INTEGER);"


class LayoutError(EdgeError):
    """A database of a layout this code cannot read as it is (older: missing tables or columns; newer)."""


@functools.cache
def expected_columns(schema: str) -> dict[str, dict[str, str]]:
    """``{table or view: {column: SQL type}}`` that ``schema`` creates (run on an empty in-memory database)."""
    import duckdb

    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    try:
        con.execute(schema)
        expected: dict[str, dict[str, str]] = {}
        for table, column, sql_type in con.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "ORDER BY table_name, ordinal_position").fetchall():
            expected.setdefault(table, {})[column] = sql_type
        return expected
    finally:
        con.close()


def present_columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """``{table or view: its columns}`` of the database: one catalog query, shared by every check of an opening."""
    present: dict[str, set[str]] = {}
    for table, column in con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal"
                                     ).fetchall():
        present.setdefault(table, set()).add(column)
    return present


def recorded_layout(con: duckdb.DuckDBPyConnection, present: dict[str, set[str]] | None = None) -> int:
    """The layout version the database records (:data:`UNVERSIONED` when it records none); ``present``: its
    :func:`present_columns`, when already read."""
    if "layout" not in (present_columns(con) if present is None else present):
        return UNVERSIONED
    found = con.execute("SELECT max(version) FROM layout").fetchall()[0][0]
    return UNVERSIONED if found is None else int(found)


def missing(present: dict[str, set[str]], schema: str, optional: frozenset[str] = frozenset(),
            only_present: bool = False) -> list[str]:
    """Tables (``name``) and columns (``table.column``) of ``schema`` the database (its :func:`present_columns`)
    lacks; ``optional`` columns are read with a fallback, and with ``only_present`` a table the database lacks is
    not a gap (it is made when there is something to put in it)."""
    gaps = []
    for table, columns in expected_columns(schema).items():
        if table not in present:
            if not only_present:
                gaps.append(table)
            continue
        gaps += [f"{table}.{c}" for c in columns if c not in present[table] and f"{table}.{c}" not in optional]
    return gaps


def check_readable(con: duckdb.DuckDBPyConnection, path: Path, schema: str, optional: frozenset[str] = frozenset(),
                   only_present: bool = False, present: dict[str, set[str]] | None = None) -> None:
    """Refuse, in one line naming ``path`` and its layout, a database this code cannot read as it is
    (``present``: its :func:`present_columns`, when already read)."""
    present = present_columns(con) if present is None else present
    version = recorded_layout(con, present)
    _refuse_newer(path, version)
    gaps = missing(present, schema, optional, only_present)
    if gaps and not only_present and set(gaps) >= set(expected_columns(schema)):
        raise LayoutError(f"{path} holds none of the collection's tables: it is not a database `logs collect` "
                          "wrote", "pass the .duckdb file written by `biolingual-edge logs collect --into`")
    if gaps:
        shown = ", ".join(gaps[:4]) + (f" and {len(gaps) - 4} more" if len(gaps) > 4 else "")
        raise LayoutError(f"{path} is a database of an older layout (layout {version}; this biolingual-edge reads "
                          f"layout {LAYOUT_VERSION}): it has no {shown}",
                          f"bring it up to date in place: `biolingual-edge logs collect CARDS --into {path}` with "
                          "any of its cards (re-collecting adds no rows), then run this again")


def upgrade(con: duckdb.DuckDBPyConnection, path: Path, schema: str) -> None:
    """Bring a database this code may write up to date: ``schema``'s missing tables and columns added, the
    version stamped. A newer layout is refused (nothing is changed in it)."""
    import duckdb

    version = recorded_layout(con)
    _refuse_newer(path, version)
    views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    try:
        # first: the schema's views may read the new columns
        for gap in missing(present_columns(con), schema, only_present=True):
            table, column = gap.split(".")
            if table not in views:  # a view is made anew by the schema
                con.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{column}" '
                            f"{expected_columns(schema)[table][column]}")
        con.execute(schema)
        con.execute(LAYOUT_SCHEMA)
        if version != LAYOUT_VERSION or not con.execute("SELECT count(*) FROM layout").fetchall()[0][0]:
            con.execute("DELETE FROM layout")
            con.execute("INSERT INTO layout VALUES (?)", [LAYOUT_VERSION])
    except duckdb.Error as e:
        raise LayoutError(f"cannot bring {path} (layout {version}) up to date: {e}",
                          "collect the cards into a new database (`biolingual-edge logs collect CARDS --into "
                          "NEW.duckdb`)") from e


def _refuse_newer(path: Path, version: int) -> None:
    if version > LAYOUT_VERSION:
        raise LayoutError(f"{path} is a database of a newer layout (layout {version}; this biolingual-edge reads "
                          f"layout {LAYOUT_VERSION} and older)",
                          "upgrade biolingual-edge (pip install -U 'biolingual-edge[desk]') to read it; the database "
                          "is left as it is")
