#!/usr/bin/env bash
# Distributed training: tools/dist_train.sh CONFIG GPUS [train.py args...]
# Without CUDA, GPUS CPU processes train over gloo. Multi-node: see tools/torchrun.sh.
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
exec "$(dirname "$0")/torchrun.sh" "$(dirname "$0")/train.py" "$GPUS" "$CONFIG" "$@"
