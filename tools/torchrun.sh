#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: torchrun SCRIPT with NPROC processes per node.
#   tools/torchrun.sh SCRIPT NPROC [script args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node.
set -euo pipefail
SCRIPT=$1
NPROC=$2
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec python -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" --master_port="${PORT:-29500}" \
    "$SCRIPT" "$@" --launcher pytorch
