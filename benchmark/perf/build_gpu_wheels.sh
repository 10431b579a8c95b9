#!/usr/bin/env bash
# Build, here, the wheels that run_gpu.sh installs on a fresh device machine (Python 3.12, torch preinstalled,
# no DeepSpeed, pydantic or diffusers) into the ignored folder benchmark/perf/wheels/, versions pinned by
# constraints.txt. DeepSpeed is built without its ops (they JIT-build when used; the step uses none); the rest
# are pure-Python wheels, or manylinux ones for pydantic_core and PyAV. pylance is not carried (its wheel is
# larger than the device's 64 MiB transfer limit): the benchmark must import without it.
#
#     bash benchmark/perf/build_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=benchmark/perf/wheels
PURE=(hjson pydantic annotated-types typing-inspection diffusers importlib_metadata)
pin() { grep -i "^${1//[-_]/[-_]}==" constraints.txt | head -1; }

rm -rf "$WHEELS"
mkdir -p "$WHEELS"
DS_BUILD_OPS=0 python -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$(pin deepspeed)"
for name in "${PURE[@]}"; do
  python -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "$(pin "$name")"
done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" "$(pin pydantic_core)"
# PyAV for media_codecs.py (its FFmpeg has NVENC and the CUDA hwaccel): one abi3 wheel, about 36 MB
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d "$WHEELS" "$(pin av)"
ls -l "$WHEELS"
du -sh "$WHEELS"
