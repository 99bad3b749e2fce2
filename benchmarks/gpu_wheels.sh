#!/usr/bin/env bash
# Wheels that benchmarks/gpu_step.py needs on the lent GPU machine (Python 3.12, torch 2.11, transformers 5.17,
# no deepspeed, no registry access): build deepspeed's pure-Python wheel here and download the rest for
# CPython 3.12 / x86-64 into .whl/ (git-ignored via .git/info/exclude). Run from the repository root.
set -euo pipefail
PY=${PY:-.venv/bin/python}
mkdir -p .whl
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d .whl \
  transformers==5.23.0 huggingface-hub==2.4.0 tokenizers==0.23.3 safetensors==0.8.0 peft==0.21.2 accelerate==1.15.0 \
  hjson==3.1.0 py-cpuinfo==9.0.0 ninja msgpack einops nvidia-ml-py
ls -la .whl
du -sh .whl
