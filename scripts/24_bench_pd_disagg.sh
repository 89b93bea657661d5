#!/usr/bin/env bash
# Benchmark PD disaggregation through the router (--pd-separated): `invoke bench`, results in
# results/${TAG}.jsonl.
set -euo pipefail
source "$(dirname "$0")/00_common.sh"

sglbench_task bench --tag "${TAG:-pd_cg1n1_cg1n2}" --mode pd "$@"
