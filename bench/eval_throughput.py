"""Per-task eval loss: length-sorted batches (ours) vs one example at a time (the baseline), same rows.

    python bench/eval_throughput.py                 # 1,000 examples on the packaged SmolLM2 student
    python bench/eval_throughput.py --n 200 --batch-size 16

Rows are built from the quickstart corpus (instruction: a question naming a passage's first words; answer:
the passage's first sentence) so their lengths vary like real data. Prints both times, the ratio and the
largest per-task loss difference between the two paths.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rows(n: int) -> list[dict]:
    from generation.data.corpus import load_corpus

    chunks = load_corpus(str(Path(__file__).resolve().parents[1] / "configs" / "quickstart_data" / "corpus"), 60)
    tasks = ["question_answering", "summarization", "extraction", "rewriting", "classification", "explanation"]
    out = []
    for i in range(n):
        text = chunks[i % len(chunks)].text
        first = re.split(r"(?<=[.!?])\s", text)[0]
        out.append({"task": tasks[i % len(tasks)], "prompt": [{"role": "user", "content": f"What does the manual say about {' '.join(text.split()[:6])}?"}],
                    "completion": [{"role": "assistant", "content": first}]})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    from eval.evaluate import load_student, task_losses
    from loop.device import attention, resolve
    from loop.models import resolve_model

    device, dtype = resolve("auto", "auto")  # the run's default: the GPU in bf16 when there is one, else the CPU in fp32
    model, tok = load_student(resolve_model(args.model, "~/.cache/daig"), None, args.threads, device, dtype, attention(device, dtype))
    data = rows(args.n)
    t = time.perf_counter()
    batched = task_losses(model, tok, data, args.batch_size, 512, desc="batched")
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    single = task_losses(model, tok, data, 1, 512, desc="one at a time")
    t_single = time.perf_counter() - t
    diff = max(abs(batched[k]["loss"] - single[k]["loss"]) for k in batched)
    tokens = sum(v["tokens"] for v in batched.values())
    print(f"{args.n} examples, {tokens} answer tokens, {args.model}, {args.threads} threads, {device} {dtype}")
    print(f"  batched (bs {args.batch_size}, length-sorted): {t_batched:7.1f} s  {args.n / t_batched:6.1f} ex/s")
    print(f"  one at a time (baseline):        {t_single:7.1f} s  {args.n / t_single:6.1f} ex/s")
    print(f"  speed-up: {t_single / t_batched:.2f}x   max per-task loss difference: {diff:.2e}")


if __name__ == "__main__":
    main()
