#!/usr/bin/env bash
# Second-stage comparison: the SciFact-trained cross-encoder (top 50, pairs cut to CE_TOKENS=96
# tokens: on SciFact its mixed score equals the one at the 128 it was trained at, for 26% less
# time; CE_TOKENS= (empty) keeps the trained length) and LLM head (top 20)
# reranking the hybrid-weighted first stage on all four collections, without retraining, plus any
# extra --rerank specs given as arguments. Each model scores once per eval; its interpolated row
# and its model-alone row replay the same scores. LLM= (empty) leaves the LLM rows out (they cost
# ~1.8 s a query on 2 AVX2 cores). Train the models first (on 2 cores):
#   .venv/bin/ragpipe train-reranker scifact --out models/scifact-ce --epochs 2 --max-tokens 128 \
#       --pseudo-queries 1000 --held-out 0.15
#   .venv/bin/ragpipe train-reranker scifact --kind llm-head --layer 18 --pooling mean --max-tokens 128 \
#       --max-queries 400 --held-out 0.2 --out models/scifact-llm-head --rerank-depth 20
set -euo pipefail
cd "$(dirname "$0")/.."
export RAGPIPE_DATA="${RAGPIPE_DATA:-$(cd .. && pwd)/shared/datasets}"
RAGPIPE="${RAGPIPE:-.venv/bin/ragpipe}"
CE_TOKENS="${CE_TOKENS-96}"
CE="${CE:-models/scifact-ce}${CE_TOKENS:+,max_tokens=$CE_TOKENS}"
LLM="${LLM-models/scifact-llm-head}"
extra=()
if [ -n "$LLM" ]; then extra+=(--rerank "llm:$LLM,depth=20" --rerank "llm:$LLM,depth=20,interpolation=1"); fi
for spec in "$@"; do extra+=(--rerank "$spec"); done
for dataset in ${DATASETS:-scifact nfcorpus-preproc cranfield cisi}; do
  "$RAGPIPE" eval "$dataset" --modes bm25,dense,hybrid-rrf,hybrid-weighted \
    --rerank "cross-encoder:$CE" --rerank "cross-encoder:$CE,interpolation=1" ${extra[@]+"${extra[@]}"} \
    --runs-dir "runs/$dataset-rerank" --output "eval/results/rerank-$dataset.json" | tee "eval/results/rerank-$dataset.txt"
done
