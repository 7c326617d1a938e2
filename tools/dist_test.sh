#!/usr/bin/env bash
# Distributed testing: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# A rank that stalls stops the job after the collective time-out: MMSEG_ESCNET_DIST_TIMEOUT or
# env_cfg.dist_cfg.timeout, in seconds (default 1800); see docs/security.md.
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec "$(dirname "$0")/torchrun.sh" "$(dirname "$0")/test.py" "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
