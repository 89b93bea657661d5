#!/usr/bin/env bash
# Benchmark the aggregated server: `invoke bench`, results in results/${TAG}.jsonl.
set -euo pipefail
source "$(dirname "$0")/00_common.sh"

sglbench_task bench --tag "${TAG:-agg_cg1n1}" --mode agg "$@"
