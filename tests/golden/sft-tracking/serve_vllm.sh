#!/usr/bin/env bash
# Serve the exported model with vLLM 0.33.0 on GPUs: an OpenAI-compatible API.
# Run: bash serve_vllm.sh              (after python export.py, in a venv made from
#                                       requirements-serve.txt: never the training venv)
#      bash serve_vllm.sh --port 8001  (more flags go to `vllm serve`)
# Clients call model lfc-model at http://127.0.0.1:8000/v1.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f exported/generation_config.json ]; then
    echo "exported/ not found: run python export.py first (tokenizer, generation config)" >&2
    exit 1
fi
exec vllm serve exported \
    --served-model-name lfc-model \
    --chat-template chat_template.jinja \
    --generation-config exported \
    --dtype float32 \
    --tensor-parallel-size 1 \
    --gpu-memory-utilization 0.9 \
    --host 127.0.0.1 \
    --port 8000 \
    "$@"
