"""Desk side (never imported by the unit runtime): collect SD-card logs from many units into DuckDB, check, export, summarise."""
