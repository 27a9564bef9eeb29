"""What the ``analyze`` command shows in its ``--help`` (choices and defaults), importable without the batch
machinery: ``biolingual-edge run`` builds the same CLI and must not load the pool, the writer or the table
formatters (≈ 3.5 MB of a unit daemon's peak RSS)."""

from __future__ import annotations

DEFAULT_FORMATS = ("csv", "raven")
FORMAT_HELP = "Output types, comma-separated: {allowed} (README: Analysis outputs)."
"""``--help`` of the shared ``--format`` option (``allowed``: the values the command writes)."""
ANALYZE_FORMATS = ("csv", "raven", "audacity", "birdnet", "occupancy")
"""``--format`` values ``analyze`` writes (Parquet needs pyarrow, which a unit does not have)."""
ANALYZE_BATCH = 1
"""Windows per inference call in ``analyze`` (always ONNX Runtime on the CPU): one window's activations fit
a core's L2 cache, so batch 1 is the cheapest per window (INT8 1.15x batch 4, fp32 equal, on a VNNI/AMX
Xeon; ``benchmarks/precision_cpu.py --batch``). The daemon batches only to catch up."""
