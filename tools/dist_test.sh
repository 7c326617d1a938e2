#!/usr/bin/env bash
# Distributed testing: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec "$(dirname "$0")/torchrun.sh" "$(dirname "$0")/test.py" "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
