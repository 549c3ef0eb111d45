#!/usr/bin/env bash
# The GPU check on a lent GPU machine, from the repository root (bench/README.md, "GPU check"):
# .gpu_carry/ holds wheels/ (mido, diskcache, symusic for Python 3.12) and model/ (an fp16 copy
# of the default model: python bench/gpu_check.py --prepare .gpu_carry/model), carried along.
set -euo pipefail
pip install -q --no-deps .gpu_carry/wheels/*.whl
pip install -q --no-deps -e .
PYTHONUNBUFFERED=1 python bench/gpu_check.py --model_dir .gpu_carry/model "$@" | tee "${OUT:-.}/gpu_check.json"
