#!/usr/bin/env bash
# `mfm train` across nodes with the DeepSpeed launcher and a hostfile ("<host> slots=<GPUs>" per line).
#
#   HOSTFILE=infra/deepspeed/hostfile infra/deepspeed/launch.sh --config run.yaml [--set key=value ...]
#   NODE_RANK=1 HOSTFILE=... infra/deepspeed/launch.sh --config run.yaml       # on each node, without ssh
#   infra/deepspeed/launch.sh --dry-run --preset tiny                         # print the command only
#
# Without NODE_RANK, run it once, on the first host: the launcher starts every host's ranks over
# passwordless ssh (pdsh). Where nodes cannot ssh to each other (Kubernetes, Slurm steps), run it on
# every node with NODE_RANK=0..N-1 in hostfile order: each node starts its own ranks (deepspeed --no_ssh).
# Arguments after the options go to `mfm train`. Environment (default):
#   HOSTFILE     hostfile path (infra/deepspeed/hostfile)
#   MASTER_ADDR  address of rank 0's node (the first host in HOSTFILE)
#   MASTER_PORT  rendezvous port (29500)
#   NODE_RANK    this node's index in HOSTFILE; unset: ssh fan-out from this node
#   LAUNCHER     ssh fan-out backend: pdsh, openmpi, mpich, impi, mvapich, slurm (pdsh)
#   DS_ARGS      extra launcher flags, e.g. "--include node-0:0,1,2,3" (none)
#   PYTHON       interpreter with mfm and deepspeed installed (python3)
#   DRY_RUN      1: print the command instead of running it, as --dry-run does (0)
set -euo pipefail

DRY_RUN=${DRY_RUN:-0}
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi
HOSTFILE=${HOSTFILE:-infra/deepspeed/hostfile}
MASTER_PORT=${MASTER_PORT:-29500}
LAUNCHER=${LAUNCHER:-pdsh}
PYTHON=${PYTHON:-python3}

if [[ ! -f "$HOSTFILE" ]]; then
    echo "launch.sh: hostfile '$HOSTFILE' not found; copy infra/deepspeed/hostfile.example and list your nodes" >&2
    exit 2
fi
first_host=$(awk '!/^[[:space:]]*(#|$)/ {print $1; exit}' "$HOSTFILE")
if [[ -z "$first_host" ]]; then
    echo "launch.sh: hostfile '$HOSTFILE' lists no hosts" >&2
    exit 2
fi
MASTER_ADDR=${MASTER_ADDR:-$first_host}

cmd=("$PYTHON" -m deepspeed.launcher.runner --hostfile "$HOSTFILE"
     --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
if [[ -n "${NODE_RANK:-}" ]]; then
    cmd+=(--no_ssh --node_rank "$NODE_RANK")
else
    cmd+=(--launcher "$LAUNCHER")
fi
# shellcheck disable=SC2206  # DS_ARGS is a list of flags: split it on spaces
cmd+=(${DS_ARGS:-})
# mfm reads its rank from the environment (RANK, LOCAL_RANK, WORLD_SIZE), as under torchrun
cmd+=(--no_local_rank --module mfm.cli train "$@")

if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    exit 0
fi
exec "${cmd[@]}"
