"""Review windows by ear, fit per-label score calibration, train few-shot heads that go back to units."""
