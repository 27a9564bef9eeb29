#!/usr/bin/env bash
# Type-check the TensorRT modules against tensorrt-stubs (no GPU or TensorRT needed).
# tensorrt-stubs 10.13 ships .pyi files without py.typed and with two syntax errors (a parameter named
# `in`, a non-default parameter after defaults), so mypy cannot read them in place: copy and patch them.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -f "$site/tensorrt_bindings/tensorrt.pyi" ] || { echo "tensorrt-stubs missing: pip install --no-deps tensorrt-stubs==10.13.0.35.1"; exit 1; }
stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
cp -r "$site/tensorrt" "$site/tensorrt_bindings" "$stubs/"
sed -i -e 's/\bin: /in_: /g' \
       -e 's/power: Weights = None, channel_axis: int)/power: Weights = None, channel_axis: int = 0)/' \
       "$stubs/tensorrt_bindings/tensorrt.pyi"
MYPYPATH="$stubs" python3 -m mypy edge/model/backends/trt.py edge/model/backends/trt_api.py edge/model/backends/device_buffers.py export/trt_build.py
