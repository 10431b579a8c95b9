#!/usr/bin/env bash
# `mfm train` across nodes with torchrun: run it on every node, with NODE_RANK=0..NNODES-1.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=<node 0 address> infra/torchrun/launch.sh --config run.yaml
#   infra/torchrun/launch.sh --dry-run --preset tiny        # print the command only
#
# Arguments after the options go to `mfm train`. Environment (default):
#   NNODES          number of nodes (1)
#   NODE_RANK       this node's index (0)
#   NPROC_PER_NODE  processes on this node (its GPU count from nvidia-smi, else 1)
#   MASTER_ADDR     address of node 0 (127.0.0.1; required when NNODES > 1)
#   MASTER_PORT     rendezvous port (29500)
#   TORCHRUN_ARGS   extra torchrun flags, e.g. "--max-restarts 2" (none)
#   PYTHON          interpreter with mfm installed (python3)
#   DRY_RUN         1: print the command instead of running it, as --dry-run does (0)
set -euo pipefail

DRY_RUN=${DRY_RUN:-0}
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python3}
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
    NPROC_PER_NODE=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    [[ "$NPROC_PER_NODE" -gt 0 ]] || NPROC_PER_NODE=1
fi
if [[ "$NNODES" -gt 1 && -z "${MASTER_ADDR:-}" ]]; then
    echo "launch.sh: NNODES=$NNODES needs MASTER_ADDR (the address of node 0)" >&2
    exit 2
fi
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}

cmd=("$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node-rank "$NODE_RANK"
     --nproc-per-node "$NPROC_PER_NODE" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT")
# shellcheck disable=SC2206  # TORCHRUN_ARGS is a list of flags: split it on spaces
cmd+=(${TORCHRUN_ARGS:-})
cmd+=(-m mfm.cli train "$@")

if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    exit 0
fi
exec "${cmd[@]}"
