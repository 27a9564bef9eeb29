#!/usr/bin/env bash
# The prepared GPU check: one command, at most 8 minutes, one JSON report ($OUT/gpu_check.json, else ./).
#   With TensorRT: engines (fp16, int8, fp32) from a tiny-checkpoint bundle, verify vs ONNX Runtime, bench, pytest -m gpu.
#   With only CUDA + torch + cuda-python: the backend's buffer/stream code with torch as the reference.
# Whatever could not run is listed under "not_run" with the reason. Exit 0: all that ran passed; 1: a step failed;
# 3: nothing could run here; 124: the 8-minute bound was hit.
set -uo pipefail
cd "$(dirname "$0")/.."
report="${OUT:-.}/gpu_check.json"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
budget="${GPU_CHECK_BUDGET_S:-450}"   # raise it only for a dry run on a slow machine
timeout --kill-after=10 "$(( ${budget%.*} + 30 ))" python3 scripts/gpu_check.py --report "$report"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "gpu_check: stopped at the 8-minute bound; $report holds the steps that finished" >&2
fi
[ -f "$report" ] && cat "$report"
exit "$status"
