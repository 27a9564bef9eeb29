"""Review windows by ear, fit per-label score confidence, train few-shot heads that go back to units."""
