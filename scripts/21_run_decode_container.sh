#!/usr/bin/env bash
# Decode server(s): `invoke decode`; returns once they answer.
set -euo pipefail
source "$(dirname "$0")/00_common.sh"

sglbench_task decode "$@"
