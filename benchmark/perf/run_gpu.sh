#!/usr/bin/env bash
# The whole GPU measurement in one command, unattended, on a fresh device machine (Python 3.12, torch
# preinstalled; DeepSpeed and the rest come as wheels that build_gpu_wheels.sh puts in benchmark/perf/wheels/,
# carried with the call): installs them into /tmp/site, then times the roofline (attainable step) and the real
# 2b train step, eager / compiled / final, at 128px and 360px at full depth (28 layers) and at 720p with
# LAYERS_720 layers (28 do not finish in the time) and the latency of one 2b sample (sample_latency.py), after
# curation's model stages (model_stages.py) and video codecs (media_codecs.py); appends everything to
# benchmark/perf/RESULTS.md with the device, date, commands and versions, and copies RESULTS.md to $OUT after
# each phase. Each command has its own time limit, so the whole run stays under 10 minutes and every phase that
# finished is already appended (and in $OUT) if the device's limit ends it.
#
#     bash benchmark/perf/run_gpu.sh [--dry-run]     # --dry-run: print the commands, run nothing
set -uo pipefail
cd "$(dirname "$0")/../.."
WHEELS=benchmark/perf/wheels
RESULTS=benchmark/perf/RESULTS.md
LAYERS_720=8
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

run() {  # a phase that fails is reported and the next runs; RESULTS.md goes to $OUT after each phase
  echo "+ $*" >&2
  (( DRY )) && return 0
  "$@" || echo "run_gpu.sh: exit $? from: $*"
  if [[ -n "${OUT:-}" && -f "$RESULTS" ]]; then cp "$RESULTS" "$OUT/RESULTS.md"; fi
}

run python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "$WHEELS"/*.whl
export PYTHONPATH="/tmp/site:$PWD"
# preflight: everything the benchmark imports is there; the versions head this run's section of RESULTS.md
run python3 -c "import deepspeed, torch; from benchmark.perf import train_step; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version(), \
'deepspeed', deepspeed.__version__, 'on', torch.cuda.get_device_name())" > /tmp/versions.txt
if (( ! DRY )); then
  if ! grep -q deepspeed /tmp/versions.txt; then
    echo "run_gpu.sh: the benchmark does not import here (see above); nothing measured" >&2
    exit 1
  fi
  printf '\n## run_gpu.sh, %s\n%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(cat /tmp/versions.txt)" >> "$RESULTS"
fi
# curation first (the shorter phases): its model stages (TransNetV2, RAFT; depth, CLIP, T5 and a LLaVA-shaped
# captioner with transformers), items/s and GPU busy share while a CPU thread feeds them; then the video engines
# it picks by itself (ops/video_devices.py), NVDEC and NVENC against the CPU's codecs (PyAV comes as a wheel; an
# engine the GPU lacks is reported as unavailable, with why)
run timeout 150 python3 benchmark/perf/model_stages.py --iters 20 --append
run timeout 60 python3 benchmark/perf/media_codecs.py --frames 240 --append
run timeout 320 python3 benchmark/perf/train_step.py --size 2b --phases 128px 360px --roofline --warmup 2 \
  --steps 3 --append
run timeout 180 python3 benchmark/perf/train_step.py --size 2b --phases 720px --layers "$LAYERS_720" --roofline \
  --warmup 1 --steps 2 --append
# one 2b sample at the paper's 97x352x640 with CFG: seconds per step and per 50-step sample, eager and compiled
# (SP=1 here; under torchrun over N GPUs the same script measures SP=N)
run timeout 150 python3 benchmark/perf/sample_latency.py --size 2b --steps 4 --append
run timeout 150 python3 benchmark/perf/sample_latency.py --size 2b --steps 4 --compile --append
