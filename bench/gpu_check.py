"""The GPU checks of issue 17 in one table. Run it through the shell script, which prints the package versions first:

    bash bench/gpu_check.sh          # a GPU machine: Qwen2-0.5B- and 1.5B-shaped students, sequence length 1024
    bash bench/gpu_check.sh --cpu    # tiny shapes on the CPU, to know it runs; QLoRA and FSDP are skipped

No network, no Hub: the models are built from configs with random weights (realistic shapes, so realistic speed and
memory; meaningless text) and the tokenizer is a byte-level BPE trained here on the quickstart corpus. Each check runs
in its own process, so its peak memory is its own and a crash costs one row, not the run:
- train: tokens/s and peak memory of our step (training.sft.train_adapter, TrainConfig defaults, the device policy) vs a
  plain SFTTrainer (trl's defaults: bf16 autocast, gradient checkpointing) vs a hand-tuned one (the policy's dtype,
  no gradient checkpointing); same rows, batch 4, LoRA r 8; the median step after the first two;
- eval: answer-loss tokens/s of eval.evaluate's length-sorted batches;
- teacher: LocalTeacher generation tokens/s at batch 1 and 64 with the seeded sampler, and whether the replies made
  alone equal the same requests' replies in the batch of 64; then batch 64 with the static KV cache (after a warm-up
  pass, where transformers compiles on a GPU) and whether its replies equal the dynamic cache's;
- qlora: 4-bit training, save, reload, eval loss; accelerate: training.run under `accelerate launch` with
  configs/accelerate/single_gpu.yaml, and with fsdp.yaml at world size 1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SHAPES = {  # Qwen2's published shapes, vocabulary included (the embeddings are a third of the 0.5B's weights)
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       vocab_size=151936),
    "qwen2-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                       vocab_size=151936),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=0),
}


def corpus_words() -> list[str]:
    folder = ROOT / "configs" / "quickstart_data" / "corpus"
    return " ".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.md"))).split()


def build(work: Path, shapes: list[str], seq: int, on_gpu: bool) -> None:
    """The tokenizer, one model folder per shape (bf16 on a GPU, as Hub checkpoints are; fp32 for the CPU run, as our
    converted models are) and rows.json: rows a little longer than seq, so every arm truncates them to exactly seq."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = corpus_words()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator([" ".join(words)], trainers.BpeTrainer(vocab_size=8192, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>",
                                  chat_template=CHATML)
    for shape in shapes:
        torch.manual_seed(0)
        spec = {**SHAPES[shape], "vocab_size": SHAPES[shape]["vocab_size"] or len(tok)}
        config = Qwen2Config(**spec, tie_word_embeddings=True, max_position_embeddings=4096, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
        with torch.device("cuda" if on_gpu else "cpu"):
            model = Qwen2ForCausalLM(config)
        model.to(torch.bfloat16 if on_gpu else torch.float32).save_pretrained(work / shape)
        tok.save_pretrained(work / shape)
        del model
    per_word = len(tok(" ".join(words[:2000])).input_ids) / 2000
    prompt_words, answer_words = int((seq - 200) / per_word), int(400 / per_word)
    rows = []
    for i in range(64):
        start = (i * 211) % (len(words) - prompt_words - answer_words)
        prompt = " ".join(words[start:start + prompt_words])
        answer = " ".join(words[start + prompt_words:start + prompt_words + answer_words])
        rows.append({"task": "qa", "prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": answer}]})
    (work / "rows.json").write_text(json.dumps(rows))


def peak_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def policy(a) -> dict:
    from loop.device import attention, resolve

    device, dtype = resolve("cpu" if a.cpu else "auto", "auto")
    return {"device": device, "dtype": dtype, "attn": attention(device, dtype)}


def train(a, kind: str, shape: str) -> dict:
    """One training arm; tokens/s of its median step after the first two (warm-up), from each step's log time."""
    import torch

    from training.config import TrainConfig
    from training.sft import lora_config, train_adapter

    rows, model, out, kw = json.loads((a.work / "rows.json").read_text()), str(a.work / shape), a.work / f"out-{kind}-{shape}", policy(a)
    cfg = TrainConfig(max_steps=a.steps, batch_size=4, logging_steps=1, max_length=a.seq)
    stamps: list[float] = []
    if kind == "ours":
        train_adapter(model, rows, out, cfg, 0, a.threads, work_dir=out / "trainer", device=kw["device"], dtype=kw["dtype"], attn=kw["attn"],
                      on_log=lambda e: stamps.append(time.perf_counter()) if "loss" in e else None)
    else:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import SFTConfig, SFTTrainer

        class Stamp(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **k):
                if logs and "loss" in logs:
                    stamps.append(time.perf_counter())

        common = dict(output_dir=str(out), max_steps=a.steps, per_device_train_batch_size=4, logging_steps=1, report_to="none",
                      max_length=a.seq, save_strategy="no")
        if kind == "plain":  # trl's defaults otherwise; use_cpu only so it runs at all on a CPU-only machine
            args, lm = SFTConfig(**common, use_cpu=not torch.cuda.is_available()), AutoModelForCausalLM.from_pretrained(model)
        else:  # hand-tuned: weights and autocast in the policy's dtype, no gradient checkpointing, same batch
            args = SFTConfig(**common, use_cpu=kw["device"] == "cpu", bf16=kw["dtype"] == "bfloat16", fp16=kw["dtype"] == "float16",
                             activation_checkpointing=False)
            lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, kw["dtype"]), **({"attn_implementation": kw["attn"]} if kw["attn"] else {}))
        SFTTrainer(model=lm, args=args, train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "completion")} for r in rows]),
                   processing_class=AutoTokenizer.from_pretrained(model), peft_config=lora_config(cfg), callbacks=[Stamp()]).train()
    step = statistics.median([t1 - t0 for t0, t1 in zip(stamps[1:], stamps[2:])])  # the median step: robust to a stall
    setup = "trl defaults (bf16 autocast, checkpointing)" if kind == "plain" else f"{kw['dtype']}, {kw['attn'] or 'sdpa'}, no checkpointing"
    return {"tokens_per_s": 4 * a.seq / step, "peak_gb": peak_gb(), "note": f"{setup}, {len(stamps)} steps"}  # rows are seq tokens


def evaluate_loss(a) -> dict:
    import torch

    from eval.evaluate import encode, load_student, sequence_nlls

    kw, rows = policy(a), json.loads((a.work / "rows.json").read_text())
    model, tok = load_student(str(a.work / a.shapes[0]), None, a.threads, **kw)
    seqs = [encode(tok, r["prompt"], r["completion"], a.seq) for r in rows]
    sequence_nlls(model, tok, seqs[:a.eval_batch], a.eval_batch)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    sequence_nlls(model, tok, seqs, a.eval_batch)
    seconds = time.perf_counter() - start
    return {"tokens_per_s": sum(len(s[0]) for s in seqs) / seconds, "peak_gb": peak_gb(), "note": f"batch {a.eval_batch}, {len(seqs)} rows"}


def teacher(a) -> list[dict]:
    """Batch 1 on 4 requests, then batch 64 on 64 requests whose first 4 are those: the seeded sampler must give the
    same replies either way (exact on the CPU; on a GPU, batched kernels may round differently)."""
    from generation.teacher.backends import LocalTeacher, TeacherRequest

    words = corpus_words()
    reqs = [TeacherRequest((("user", "Write one question about this passage:\n" + " ".join(words[i * 97:i * 97 + 150])),), a.new_tokens, 1.0, 1.0, i)
            for i in range(64)]
    t = LocalTeacher(str(a.work / a.shapes[0]), "bench", 1, a.threads, **policy(a))
    t.generate(reqs[:1], desc="")  # load and warm up
    rows, replies = [], {}
    for batch, n in ((1, 4), (64, 64)):
        t.batch_size = batch
        start = time.perf_counter()
        replies[batch] = t.generate(reqs[:n], desc="")
        seconds = time.perf_counter() - start
        rows.append({"check": f"teacher batch {batch}", "tokens_per_s": sum(r.completion_tokens for r in replies[batch]) / seconds,
                     "peak_gb": peak_gb(), "note": f"{n} requests x {a.new_tokens} tokens"})
    same = sum(x.text == y.text for x, y in zip(replies[1], replies[64]))
    rows[-1]["note"] += f"; alone == batched: {same}/4"
    t.static_cache = True  # generation.teacher.static_cache: one pass to compile, then the timed one
    t.generate(reqs, desc="")
    start = time.perf_counter()
    static = t.generate(reqs, desc="")
    seconds = time.perf_counter() - start
    same = sum(x.text == y.text for x, y in zip(static, replies[64]))
    rows.append({"check": "teacher batch 64 static", "tokens_per_s": sum(r.completion_tokens for r in static) / seconds,
                 "peak_gb": peak_gb(), "note": f"static KV cache, after a warm-up pass; == dynamic: {same}/64"})
    return rows


def qlora(a) -> dict:
    from eval.evaluate import load_student, task_losses
    from training.config import TrainConfig
    from training.sft import train_adapter

    kw, rows, out = policy(a), json.loads((a.work / "rows.json").read_text()), a.work / "out-qlora"
    model = str(a.work / a.shapes[0])
    stats = train_adapter(model, rows[:12], out, TrainConfig(load_in_4bit=True, max_steps=3, batch_size=4, max_length=a.seq), 0, a.threads,
                          work_dir=out / "trainer", **kw)
    student, tok = load_student(model, str(out), a.threads, **kw)
    loss = task_losses(student, tok, rows[:8], a.eval_batch, a.seq, desc="")["qa"]["loss"]
    return {"tokens_per_s": 3 * 4 * a.seq / stats["seconds"], "peak_gb": peak_gb(),
            "note": f"trained, saved, reloaded; eval loss {loss:.3f} (tokens/s incl. load)"}


def launched(a, config: str) -> dict:
    import yaml

    from training.config import TrainConfig
    from training.sft import train_adapter_launched

    path = ROOT / "configs" / "accelerate" / config
    if config == "fsdp.yaml":  # world size 1
        path = a.work / "fsdp1.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load((ROOT / "configs/accelerate/fsdp.yaml").read_text()), "num_processes": 1}))
    rows, out = json.loads((a.work / "rows.json").read_text()), a.work / f"out-{config}"
    cfg = TrainConfig(max_steps=2, batch_size=4, max_length=a.seq, launcher="accelerate", accelerate_config=str(path))
    start = time.perf_counter()
    stats = train_adapter_launched(str(a.work / a.shapes[0]), rows[:8], out, cfg, 0, a.threads, None, a.work / f"launch-{config}",
                                   **policy(a))
    assert (out / "adapter_model.safetensors").exists(), "no adapter saved"
    return {"tokens_per_s": None, "peak_gb": None,
            "note": f"world size {stats['world_size']}, loss {stats['train_loss']:.3f}, {time.perf_counter() - start:.0f} s with launch"}


def run_arm(a) -> list[dict]:
    name = a.arm
    if name == "build":
        build(a.work, a.shapes, a.seq, not a.cpu)
        return [{"machine": machine(a)}]
    if name.startswith("train:"):
        _, kind, shape = name.split(":")
        return [{"check": f"train {kind}", "shape": shape, **train(a, kind, shape)}]
    if name == "eval":
        rows = [{"check": "eval loss", **evaluate_loss(a)}]
    elif name == "teacher":
        rows = teacher(a)
    elif name == "qlora":
        rows = [{"check": "qlora", **qlora(a)}]
    else:
        config = name.split(":")[1]
        rows = [{"check": f"accelerate {config.removesuffix('.yaml')}", **launched(a, config)}]
    return [{"shape": a.shapes[0], **r} for r in rows]


def machine(a) -> str:
    import torch

    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not a.cpu else f"CPU {platform.machine()}"
    return f"{where}; {os.cpu_count()} cores, {a.threads} torch threads; torch {torch.__version__}"


def arms(a) -> list[str]:
    names = ["build"] + [f"train:{kind}:{shape}" for shape in a.shapes for kind in ("ours", "plain", "hand")]
    return names + ["eval", "qlora", "accelerate:single_gpu.yaml", "accelerate:fsdp.yaml", "teacher"]  # the teacher last: its static cache compiles


def table(rows: list[dict]) -> str:
    lines = [f"{'check':22s} {'shape':11s} {'tokens/s':>10s} {'peak GB':>8s}  note"]  # check names fit in 22
    for r in rows:
        tps = f"{r['tokens_per_s']:10.1f}" if r.get("tokens_per_s") is not None else f"{'-':>10s}"
        peak = f"{r['peak_gb']:8.2f}" if r.get("peak_gb") is not None else f"{'-':>8s}"
        lines.append(f"{r['check']:22s} {r.get('shape', ''):11s} {tps} {peak}  {r.get('note', '')}")
    return "\n".join(lines)


def add_ratios(rows: list[dict]) -> None:
    """On each 'train ours' row: its tokens/s over the plain and the hand-tuned SFTTrainer's, same shape."""
    speed = {(r["check"], r.get("shape")): r.get("tokens_per_s") for r in rows}
    for r in rows:
        if r["check"] == "train ours" and r.get("tokens_per_s"):
            for kind, label in (("plain", "plain"), ("hand", "hand-tuned")):
                other = speed.get((f"train {kind}", r["shape"]))
                r["note"] += f"; {r['tokens_per_s'] / other:.2f}x {label}" if other else f"; {label} failed"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU; QLoRA and FSDP skipped")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: 2 with --cpu, else up to 8)")
    p.add_argument("--timeout", type=int, default=240, help="seconds allowed to each check")
    p.add_argument("--budget", type=int, default=450, help="seconds for the whole run: a check that would start later is skipped, "
                   "one that would run past it is cut there (device time is scarce)")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) / "gpu_check.jsonl" if os.environ.get("OUT") else None,
                   help="also append each row to this JSONL as it is measured (default: $OUT/gpu_check.jsonl when $OUT is set)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (models, adapters, logs)")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.threads = a.threads or (2 if a.cpu else min(8, os.cpu_count() or 1))
    a.shapes = ["tiny"] if a.cpu else ["qwen2-0.5b", "qwen2-1.5b"]
    from eval.evaluate import batch_for

    a.seq, a.steps, a.new_tokens = (256, 12, 16) if a.cpu else (1024, 10, 64)
    a.eval_batch = batch_for(0, "cpu" if a.cpu else "cuda")  # what a run's eval uses on this device
    if a.arm:
        import torch

        torch.set_num_threads(a.threads)
        for row in run_arm(a):
            print("RESULT " + json.dumps(row))
        return
    a.work = Path(tempfile.mkdtemp(prefix="gpu_check."))
    print(f"work folder: {a.work}; load average {' '.join(open('/proc/loadavg').read().split()[:3])}", flush=True)
    rows, start = [], time.time()
    try:
        for name in arms(a):
            if a.cpu and name in ("qlora", "accelerate:fsdp.yaml"):
                rows.append({"check": name.replace(":fsdp.yaml", " fsdp"), "note": "skipped: needs CUDA"})
                continue
            left = a.budget - (time.time() - start)
            if left < 20:
                rows.append({"check": name, "note": f"skipped: the {a.budget} s budget is spent"})
                continue
            found = run_sub(a, name, min(a.timeout, int(left)))
            print(f"  {name} done at {time.time() - start:.0f} s: " + "; ".join(json.dumps(r) for r in found), flush=True)
            if a.out:  # each row kept as it comes: a run cut short by the device's limit still returns what it measured
                with open(a.out, "a") as f:
                    f.write("".join(json.dumps({"arm": name, **r}) + "\n" for r in found))
            if name == "build":  # the child reports the machine, so this process never opens a CUDA context
                print(f"machine: {found[0].get('machine') or found[0]['note']}", flush=True)
                if found[0].get("failed"):
                    break
                continue
            rows += found
    finally:
        if not a.keep:
            shutil.rmtree(a.work, ignore_errors=True)
    add_ratios(rows)
    print(f"\n{table(rows)}\npeak GB: GPU memory allocated on a GPU, process RSS on the CPU; {time.time() - start:.0f} s in all")
    sys.exit(1 if any(r.get("failed") for r in rows) else 0)


def run_sub(a, name: str, timeout: int) -> list[dict]:
    """One check in its own process; a failure or a timeout is one row naming it."""
    cmd = [sys.executable, __file__, "--arm", name, "--work", str(a.work), "--threads", str(a.threads)] + (["--cpu"] if a.cpu else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"check": name, "note": f"FAILED: over {timeout} s", "failed": True}]
    found = [json.loads(x[7:]) for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or (name != "build" and not found):
        tail = [x for x in proc.stderr.strip().splitlines() if x.strip()][-15:] or [f"exit {proc.returncode}"]
        print(f"  {name} failed:\n    " + "\n    ".join(tail), flush=True)  # the table keeps only the last line
        return [{"check": name, "note": f"FAILED: {tail[-1][:150]}", "failed": True}]
    return found


if __name__ == "__main__":
    main()
