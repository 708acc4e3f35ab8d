#!/usr/bin/env bash
# Passage splitting vs. one truncated passage per document (--passage-tokens 0), same session.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAGPIPE_DATA="${RAGPIPE_DATA:-$(cd .. && pwd)/shared/datasets}"
RAGPIPE="${RAGPIPE:-.venv/bin/ragpipe}"
dataset="${1:-scifact}"
"$RAGPIPE" eval "$dataset" --index "indexes/$dataset-truncated" --passage-tokens 0 --rebuild \
  --modes dense,hybrid-rrf,hybrid-weighted --runs-dir "runs/$dataset-truncated" --output "eval/results/$dataset-truncated.json" | tee "eval/results/$dataset-truncated.txt"
