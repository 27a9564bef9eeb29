"""Off the unit: collect SD-card logs from many recorder units into DuckDB, check, export and summarise them."""
