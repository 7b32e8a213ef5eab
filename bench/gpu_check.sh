#!/usr/bin/env bash
# bash bench/gpu_check.sh [--cpu]
# The GPU checks of issue 17 in one command and one table (bench/gpu_check.py says what each row measures).
# Offline: config-built random-weight models and a tokenizer trained on the spot; nothing from the Hub.
# --cpu: tiny shapes on the CPU, so the script is known to run before a GPU machine is spent on it.
# bench/wheels/ (bash bench/gpu_wheels.sh, carried to the machine): pinned wheels installed where the machine lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY="${PYTHON:-$(command -v python3 || command -v python)}"  # the GPU image's python3 holds its torch
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if [ -d bench/wheels ]; then  # brought by bench/gpu_wheels.sh: those the machine lacks or has at another version go
  # to /tmp/site, ahead of the image's own on PYTHONPATH (the device notes' way: the image's site-packages stay as they are)
  need=$("$PY" - <<'PYEOF'
import importlib.metadata as md, pathlib, re
for wheel in sorted(pathlib.Path("bench/wheels").glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    try:
        have = md.version(re.sub(r"[-_.]+", "-", name))
    except md.PackageNotFoundError:
        have = None
    if have != version:
        print(wheel)
PYEOF
)
  if [ -n "$need" ]; then
    echo "installing into /tmp/site: $(echo $need | xargs -n1 basename | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $need
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
"$PY" - <<'PYEOF'
import importlib.metadata as md
have = []
for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow", "fsspec", "bitsandbytes", "flash-attn"):
    try:
        have.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        have.append(f"{name} MISSING")
print("packages: " + ", ".join(have))
PYEOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" bench/gpu_check.py "$@"
