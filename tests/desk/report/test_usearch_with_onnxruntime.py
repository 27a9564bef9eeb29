"""The desk's usearch (perch-hoplite's index, written by `logs export --format hoplite`) and ONNX Runtime live in
one process whichever loads first: usearch 2.26.2 and later, imported before onnxruntime, crash the interpreter
(segfault), hence the pin below 2.26.2 in pyproject's desk extra."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("first,then", [("usearch.index", "onnxruntime"), ("onnxruntime", "usearch.index")])
def test_usearch_and_onnxruntime_import_in_either_order(first: str, then: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {first}; import {then}; print('both')"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "both", (done.returncode, done.stderr[-500:])
