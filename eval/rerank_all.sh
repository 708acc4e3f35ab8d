#!/usr/bin/env bash
# Second-stage comparison: the SciFact-trained cross-encoder (and any extra --rerank specs given
# as arguments) reranking the hybrid-weighted first stage on all four collections, without
# retraining. Train the model first (about 12 minutes on 2 cores):
#   .venv/bin/ragpipe train-reranker scifact --out models/scifact-ce --epochs 1
set -euo pipefail
cd "$(dirname "$0")/.."
export RAGPIPE_DATA="${RAGPIPE_DATA:-$(cd .. && pwd)/shared/datasets}"
RAGPIPE="${RAGPIPE:-.venv/bin/ragpipe}"
CE="${CE:-models/scifact-ce}"
extra=()
for spec in "$@"; do extra+=(--rerank "$spec"); done
for dataset in ${DATASETS:-scifact nfcorpus-preproc cranfield cisi}; do
  "$RAGPIPE" eval "$dataset" --modes hybrid-weighted --metrics ndcg@10,recall@100,mrr@10 \
    --rerank "cross-encoder:$CE" --rerank "cross-encoder:$CE,interpolation=1" "${extra[@]}" \
    --runs-dir "runs/$dataset-rerank" --output "eval/results/rerank-$dataset.json" | tee "eval/results/rerank-$dataset.txt"
done
