#!/usr/bin/env bash
# Make the tensorrt-stubs package usable by mypy (see docs/tensorrt.md, "Static checks"):
# copy the stub folders into $1 (default .venv/trt-stubs) and fix the two syntax errors in
# the generated stubs (a parameter named `in`, a non-default parameter after defaults).
set -euo pipefail
venv=${VENV:-.venv}
dest=${1:-$venv/trt-stubs}
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$dest" && mkdir -p "$dest"
cp -r "$site/tensorrt" "$site/tensorrt_bindings" "$dest/"
sed -i -E 's/\(self(: [A-Za-z0-9]+)?, in: /(self\1, in_: /' "$dest/tensorrt_bindings/tensorrt.pyi"
sed -i 's/power: Weights = None, channel_axis: int)/power: Weights = None, channel_axis: int = 0)/' "$dest/tensorrt_bindings/tensorrt.pyi"
