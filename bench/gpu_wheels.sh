#!/usr/bin/env bash
# bash bench/gpu_wheels.sh [--bnb]
# The wheels bench/gpu_check.sh installs on the lent GPU machine where its Python (3.12, /opt/torch/.venv; package
# list in the device tool's KINDS.md) lacks them or has other versions: the pinned (constraints.txt) trl, datasets
# (+ dill, multiprocess), transformers and peft, about 17 MB, into bench/wheels/ (ignored by git: name it in the
# device call's `carry`). --bnb adds bitsandbytes (43 MB) for the QLoRA row: about 64 MB with the repo, at the
# limit of what a device call carries. torch is never brought: the machine's CUDA build stays. datasets needs
# pyarrow >= 24 and fsspec <= 2026.9.0 from the image (not known: gpu_check.sh prints the versions it finds).
set -euo pipefail
cd "$(dirname "$0")/.."
pins=()
for p in trl datasets dill multiprocess transformers peft; do
  pins+=("$(grep -i "^$p==" constraints.txt)")
done
[ "${1:-}" = "--bnb" ] && pins+=("bitsandbytes")
rm -rf bench/wheels && mkdir -p bench/wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d bench/wheels "${pins[@]}"
du -ch bench/wheels/*.whl | tail -1
