#!/usr/bin/env bash
# bash bench/gpu_wheels.sh [--bnb]
# The wheels bench/gpu_check.sh installs on a GPU machine that lacks them or has other versions: the pinned
# (constraints.txt) trl, peft, accelerate, transformers, huggingface_hub, tokenizers and safetensors, about 20 MB, into
# bench/wheels/ (ignored by git: pass it in the device tool's `carry`). --bnb adds bitsandbytes (43 MB) for the QLoRA
# row: with the repo that is close to the 64 MiB a device call carries, so bring it only when the machine lacks it.
# torch is never brought: the machine's CUDA build stays.
set -euo pipefail
cd "$(dirname "$0")/.."
pins=()
for p in trl peft accelerate transformers huggingface_hub tokenizers safetensors; do
  pins+=("$(grep -i "^$p==" constraints.txt)")
done
[ "${1:-}" = "--bnb" ] && pins+=("bitsandbytes")
mkdir -p bench/wheels
python -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --python-version 3.11 -d bench/wheels "${pins[@]}"
du -ch bench/wheels/*.whl | tail -1
