"""LoRA training throughput: our training step vs a plain SFTTrainer with default arguments, and vs a hand-tuned one.

    python bench/train_throughput.py              # packaged SmolLM2, 3 steps each, batch 4
    python bench/train_throughput.py --steps 5

Each arm runs in its own process (so peak memory is its own), same rows, same LoRA config, batch 4:
- ours: training.sft.train_adapter with TrainConfig defaults, on the device policy's auto choice (loop/device.py);
- plain: SFTConfig(output_dir, use_cpu=True when there is no GPU), every other argument at trl's default
  (bf16 on, gradient checkpointing on);
- hand-tuned: what a careful user would set by hand: the policy's dtype (fp32 on a CPU, bf16 on a GPU that has it)
  for weights and autocast, no gradient checkpointing, padding-free batches.
Prints tokens/s (load included), peak RSS and ours' ratio against each.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def dataset(n: int) -> list[dict]:
    from bench.eval_throughput import rows

    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows(n)]


def arm(name: str, steps: int, threads: int) -> dict:
    import torch

    from loop.device import attention, resolve
    from loop.models import resolve_model
    from training.config import TrainConfig
    from training.sft import lora_config, train_adapter

    torch.set_num_threads(threads)
    model_path = resolve_model("smollm2-135m-instruct", "~/.cache/daig")
    cfg = TrainConfig(max_steps=steps, batch_size=4, logging_steps=1)
    data = dataset(4 * steps)
    out = tempfile.mkdtemp()
    device, dtype = resolve("auto", "auto")
    start = time.perf_counter()
    if name == "ours":
        stats = train_adapter(model_path, data, out, cfg, seed=0, num_threads=threads, device=device, dtype=dtype,
                              attn=attention(device, dtype))
        tokens = stats["tokens_per_epoch"]  # steps x batch 4 = exactly one epoch of the rows
    else:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        if name == "plain_sfttrainer_defaults":
            args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=4, report_to="none",
                             use_cpu=not torch.cuda.is_available())
            model = AutoModelForCausalLM.from_pretrained(model_path)
        else:  # hand-tuned; trl refuses max_length with padding_free (it cannot truncate there)
            args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=4, report_to="none", use_cpu=device == "cpu",
                             bf16=dtype == "bfloat16", fp16=dtype == "float16", activation_checkpointing=False, padding_free=True,
                             max_length=None)
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data),
                             processing_class=AutoTokenizer.from_pretrained(model_path), peft_config=lora_config(cfg))
        trainer.train()
        tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    seconds = time.perf_counter() - start
    return {"arm": name, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arm", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        print("RESULT " + json.dumps(arm(args.arm, args.steps, args.threads)))
        return
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}, {os.cpu_count()} cores, {args.threads} threads")
    results = {}
    for name in ("ours", "plain_sfttrainer_defaults", "hand_tuned_sfttrainer"):
        proc = subprocess.run([sys.executable, __file__, "--arm", name, "--steps", str(args.steps), "--threads", str(args.threads)],
                              capture_output=True, text=True, cwd=ROOT)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{name} failed:\n{proc.stderr[-2000:]}")
        results[name] = json.loads(line[7:])
    for r in results.values():
        print(f"  {r['arm']:26s} {r['tokens_per_s']:8.1f} tokens/s  {r['seconds']:7.1f} s (incl. load)  peak RSS {r['peak_rss_mb']:6.0f} MB")
    ours = results["ours"]
    for name in ("plain_sfttrainer_defaults", "hand_tuned_sfttrainer"):
        other = results[name]
        print(f"  ours / {name:26s} speed {ours['tokens_per_s'] / other['tokens_per_s']:5.2f}x   "
              f"memory {ours['peak_rss_mb'] / other['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
