#!/usr/bin/env bash
# Control-host venv (bench client, routers, plotting): `invoke setup`, or `make setup` when
# the venv does not exist yet.
set -euo pipefail
source "$(dirname "$0")/00_common.sh"

if [[ -x "${INVOKE}" ]]; then
  sglbench_task setup "$@"
fi
if [[ "${SGLBENCH_DRY_RUN:-0}" == 1 ]]; then
  echo "make setup VENV=${VENV_DIR}"
  exit 0
fi
exec make -C "${REPO_ROOT}" setup VENV="${VENV_DIR}"
