"""Desk side, never imported by the unit runtime: collect SD-card logs into DuckDB, check, export, summarise."""
