#!/usr/bin/env bash
# Distributed training: tools/dist_train.sh CONFIG GPUS [train.py args...]
# Without CUDA, GPUS CPU processes train over gloo. Multi-node: see tools/torchrun.sh.
# A rank that stalls stops the job after the collective time-out: MMSEG_ESCNET_DIST_TIMEOUT or
# env_cfg.dist_cfg.timeout, in seconds (default 1800); see docs/security.md.
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
exec "$(dirname "$0")/torchrun.sh" "$(dirname "$0")/train.py" "$GPUS" "$CONFIG" "$@"
