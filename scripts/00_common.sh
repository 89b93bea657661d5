#!/usr/bin/env bash
# Sourced by the drop-in wrappers scripts/NN_*.sh: where the repo and its venv are, and how to
# hand over to an invoke task. The tasks read the settings themselves (.env, then the
# environment, as the old ${VAR:-default} did), so variables such as BENCH_NUM_PROMPTS,
# PREFILL_HOST or ROUTER_PORT pass straight through. SGLBENCH_DRY_RUN=1 adds --dry-run.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The tasks run in the repo (its .env, results/); a relative SGLBENCH_ENV_FILE stays the user's.
if [[ -n "${SGLBENCH_ENV_FILE:-}" && "${SGLBENCH_ENV_FILE}" != /* ]]; then
  export SGLBENCH_ENV_FILE="${PWD}/${SGLBENCH_ENV_FILE}"
fi
ENV_FILE="${SGLBENCH_ENV_FILE:-${REPO_ROOT}/.env}"

# The venv: VENV_DIR from the environment, else from the .env, else .venv. Only this key is
# read from the .env here (not `source`d: values python-dotenv accepts, such as unquoted
# words with spaces, are not always valid bash).
if [[ -z "${VENV_DIR:-}" && -f "${ENV_FILE}" ]]; then
  VENV_DIR="$(sed -n -E "s/^[[:space:]]*(export[[:space:]]+)?VENV_DIR=[\"']?([^\"'#]*).*/\2/p" \
    "${ENV_FILE}" | tail -n 1 | sed -E 's/[[:space:]]+$//')"
fi
VENV_DIR="${VENV_DIR:-.venv}"
VENV_DIR="${VENV_DIR/#\~/${HOME}}"
[[ "${VENV_DIR}" == /* ]] || VENV_DIR="${REPO_ROOT}/${VENV_DIR}"
INVOKE="${VENV_DIR}/bin/invoke"

# sglbench_task TASK [ARGS...]: replace this shell with `invoke TASK ARGS...` run in the repo.
sglbench_task() {
  if [[ ! -x "${INVOKE}" ]]; then
    echo "error: VENV_DIR=${VENV_DIR} has no invoke; run \`make setup\` first" >&2
    exit 2
  fi
  local dry_run=()
  if [[ "${SGLBENCH_DRY_RUN:-0}" == 1 ]]; then
    dry_run=(--dry-run)
  fi
  cd "${REPO_ROOT}"
  exec "${INVOKE}" "$@" "${dry_run[@]}"
}
