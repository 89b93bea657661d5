#!/usr/bin/env bash
# Aggregated server (as the old script): `invoke agg`; returns once it answers.
set -euo pipefail
source "$(dirname "$0")/00_common.sh"

sglbench_task agg "$@"
