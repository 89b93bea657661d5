#!/usr/bin/env bash
# PD router in front of prefill and decode: `invoke pd-router`. It stays in the foreground as
# before (Ctrl-C stops it); pass --detach to return once it routes.
set -euo pipefail
source "$(dirname "$0")/00_common.sh"

sglbench_task pd-router "$@"
