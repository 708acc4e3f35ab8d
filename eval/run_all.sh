#!/usr/bin/env bash
# Reproduce the README's comparison tables: every setup on the four shared test collections,
# each index rebuilt so the build-time column is measured in this run.
# Usage: eval/run_all.sh [extra ragpipe eval options]     (RAGPIPE_DATA defaults to ../shared/datasets)
set -euo pipefail
cd "$(dirname "$0")/.."
export RAGPIPE_DATA="${RAGPIPE_DATA:-$(cd .. && pwd)/shared/datasets}"
RAGPIPE="${RAGPIPE:-.venv/bin/ragpipe}"
for dataset in scifact nfcorpus-preproc cranfield cisi; do
  "$RAGPIPE" eval "$dataset" --rebuild --output "eval/results/$dataset.json" "$@" | tee "eval/results/$dataset.txt"
done
