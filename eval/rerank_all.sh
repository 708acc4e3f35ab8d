#!/usr/bin/env bash
# Second-stage comparison: the SciFact-trained cross-encoder (and any extra --rerank specs given
# as arguments) reranking the hybrid-weighted first stage on all four collections, without
# retraining. Each eval scores a model once; the interpolated row and the model-alone row replay
# the same scores. Train the model first (about 22 minutes on 2 cores without native bf16):
#   .venv/bin/ragpipe train-reranker scifact --out models/scifact-ce --epochs 1 --max-tokens 128 \
#       --pseudo-queries 1000 --held-out 0.15
set -euo pipefail
cd "$(dirname "$0")/.."
export RAGPIPE_DATA="${RAGPIPE_DATA:-$(cd .. && pwd)/shared/datasets}"
RAGPIPE="${RAGPIPE:-.venv/bin/ragpipe}"
CE="${CE:-models/scifact-ce}"
extra=()
for spec in "$@"; do extra+=(--rerank "$spec"); done
for dataset in ${DATASETS:-scifact nfcorpus-preproc cranfield cisi}; do
  "$RAGPIPE" eval "$dataset" --modes bm25,dense,hybrid-rrf,hybrid-weighted \
    --rerank "cross-encoder:$CE" --rerank "cross-encoder:$CE,interpolation=1" ${extra[@]+"${extra[@]}"} \
    --runs-dir "runs/$dataset-rerank" --output "eval/results/rerank-$dataset.json" | tee "eval/results/rerank-$dataset.txt"
done
