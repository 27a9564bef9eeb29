"""`analyze`: recordings cut into pieces, a local pool, one writer with a work log, the result tables."""
