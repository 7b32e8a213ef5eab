"""The training step as its own program, so `accelerate launch` can run it on several processes or GPUs:

    accelerate launch --config_file configs/accelerate/ddp.yaml -m training.run \
        --model MODEL_DIR --rows rows.jsonl --config train.json --out ADAPTER_DIR [--init-adapter DIR] \
        [--device cuda --dtype bfloat16 --attn flash_attention_2]

rows.jsonl holds conversational {"prompt", "completion"} rows; train.json a TrainConfig as JSON. The
main process writes the adapter and training_stats.json to --out.
"""
from __future__ import annotations

import argparse
import json

from training.config import TrainConfig
from training.sft import train_adapter


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.run")
    p.add_argument("--model", required=True)
    p.add_argument("--rows", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--init-adapter")
    p.add_argument("--work-dir", help="scratch folder for the trainer (default: beside --out)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the Trainer takes each process's GPU)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--attn", default="", help="attention implementation: flash_attention_2, or '' for transformers' own choice")
    args = p.parse_args(argv)
    with open(args.rows, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(args.config, encoding="utf-8") as f:
        cfg = TrainConfig(**json.load(f))
    train_adapter(args.model, rows, args.out, cfg, args.seed, args.threads, init_adapter=args.init_adapter, work_dir=args.work_dir,
                  device=args.device, dtype=args.dtype, attn=args.attn)


if __name__ == "__main__":
    main()
