#!/usr/bin/env bash
# Prefill server(s): `invoke prefill`; returns once they answer.
set -euo pipefail
source "$(dirname "$0")/00_common.sh"

sglbench_task prefill "$@"
