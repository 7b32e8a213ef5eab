"""LoRA SFT of the student with trl's SFTTrainer: conversational prompt/completion rows, loss on the
completion (the answer and its end-of-turn tokens) only.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

from training.config import TrainConfig

log = logging.getLogger(__name__)


def check_hardware(cfg: TrainConfig) -> None:
    """Fail at start-up, not after an hour of generation, when the config needs hardware that is not here."""
    import importlib.util

    import torch

    if cfg.load_in_4bit and not torch.cuda.is_available():
        raise ValueError("training.load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no CUDA "
                         "device: set training.load_in_4bit=false")
    if cfg.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("training.load_in_4bit needs bitsandbytes: pip install bitsandbytes")


def data_mix(cfg: TrainConfig, continuing: bool) -> str:
    """training.data_mix with auto resolved: a continued adapter has seen the earlier rounds' rows."""
    return cfg.data_mix if cfg.data_mix != "auto" else ("new" if continuing else "all")


def mix_rows(rows_by_round: list[list[dict]], cfg: TrainConfig, continuing: bool, rng) -> list[dict]:
    """The rows a round trains on, by training.data_mix (rows_by_round[-1] is this round's)."""
    mix = data_mix(cfg, continuing)
    new, earlier = rows_by_round[-1], [r for rows in rows_by_round[:-1] for r in rows]
    if mix == "new":
        return list(new)
    if mix == "all":
        return earlier + new
    return rng.sample(earlier, round(float(mix) * len(earlier))) + new


def student_row(row: dict, include_context: bool) -> dict:
    """A kept example as a conversational prompt/completion row for trl and eval: [context,] instruction[, input]."""
    context = row.get("context", "") if include_context else ""
    parts = [context, row["instruction"], "" if row.get("input") == context else row.get("input", "")]  # the chunk once
    prompt = "\n\n".join(p for p in parts if p)
    return {"id": row["id"], "task": row["task"], "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": row["output"]}]}


def load_student_for_training(model_path: str, cfg: TrainConfig, dtype: str = "float32", attn: str = ""):
    """The base model in `dtype` (the Trainer moves it to its device); 4-bit NF4 on this process's GPU for QLoRA."""
    import os

    import torch
    from transformers import AutoModelForCausalLM

    if not cfg.load_in_4bit:
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype), **({"attn_implementation": attn} if attn else {}))
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = getattr(torch, dtype)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)
    gpu = int(os.environ.get("LOCAL_RANK", "0"))  # under accelerate launch, each process's own GPU
    model = AutoModelForCausalLM.from_pretrained(model_path, quantization_config=quant, dtype=compute, device_map={"": gpu},
                                                 **({"attn_implementation": attn} if attn else {}))
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)


def train_adapter_launched(model_path: str, rows: list[dict], out_dir: str | Path, cfg: TrainConfig, seed: int,
                           num_threads: int, init_adapter: str | Path | None, work_dir: str | Path,
                           device: str = "cpu", dtype: str = "float32", attn: str = "") -> dict:
    """The same training step as train_adapter, run by `accelerate launch` in child processes."""
    import dataclasses
    import subprocess
    import sys

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "rows.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in rows))
    (work / "train.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if cfg.accelerate_config:
        cmd += ["--config_file", cfg.accelerate_config]
    cmd += ["-m", "training.run", "--model", model_path, "--rows", str(work / "rows.jsonl"), "--config", str(work / "train.json"),
            "--out", str(out_dir), "--seed", str(seed), "--threads", str(num_threads), "--work-dir", str(work / "trainer"),
            "--device", device, "--dtype", dtype, "--attn", attn]
    if init_adapter:
        cmd += ["--init-adapter", str(init_adapter)]
    with open(work / "launch.log", "w") as logf:
        code = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1]).returncode
    if code != 0:
        tail = (work / "launch.log").read_text()[-1500:]
        raise RuntimeError(f"accelerate launch of the training step failed (exit {code}); log {work / 'launch.log'}:\n{tail}")
    return json.loads((Path(out_dir) / "training_stats.json").read_text())


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    targets = cfg.target_modules if cfg.target_modules == "all-linear" else [m.strip() for m in cfg.target_modules.split(",") if m.strip()]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", **cfg.lora_args)


def train_adapter(model_path: str, rows: list[dict], out_dir: str | Path, cfg: TrainConfig, seed: int,
                  num_threads: int, init_adapter: str | Path | None = None, work_dir: str | Path | None = None,
                  on_log: Callable[[dict], None] | None = None, device: str = "cpu", dtype: str = "float32",
                  attn: str = "") -> dict:
    """Train a LoRA adapter on rows ({'prompt': [msgs], 'completion': [msgs]}) and save it to out_dir.

    init_adapter: continue training that adapter instead of starting a fresh one.
    on_log: called with each trainer log entry ({step, loss, learning_rate, grad_norm, epoch, ...}) as it is written.
    device, dtype, attn: resolved by the caller (loop/device.py); the base loads in dtype and trains with bf16/fp16
    autocast to match. "cuda" means the GPU the Trainer picks (cuda:0, or each process's own under accelerate).
    Returns training figures (loss, steps, seconds, tokens).
    """
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise ValueError("no training rows: the round kept no examples")
    check_hardware(cfg)
    torch.set_num_threads(num_threads)
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = load_student_for_training(model_path, cfg, dtype, attn)
    peft_config = None
    if init_adapter is not None:
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    else:
        peft_config = lora_config(cfg)
    out_dir = Path(out_dir)
    # Padding-free packs a batch into one row: a win where the attention skips across examples (FlashAttention 2) or
    # rows are short (a CPU's); a GPU's SDPA would compute the packed row's whole masked square. trl's own packing
    # (sft_args.packing) needs max_length, so it keeps the padded path.
    free = cfg.padding_free and not cfg.sft_args.get("packing") and (device == "cpu" or attn == "flash_attention_2")
    args = SFTConfig(**{**dict(
        output_dir=str(work_dir or out_dir.parent / "trainer"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        max_length=None if free else cfg.max_length,  # trl refuses max_length with padding_free: truncated() below cuts instead
        completion_only_loss=True,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=seed,
        use_cpu=device == "cpu",
        # trl defaults to bf16=True; on a CPU without native bf16 that emulates every matmul (10x slower, measured).
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name; trl's default is on
        # Padding-free relies on transformers finding the packed sequences from position_ids, which it does only
        # without a KV cache; trl's compute_loss passes use_cache=False, so the attention stays per example.
        padding_free=free,
        dataloader_num_workers=0,
    ), **cfg.sft_args})  # sft_args: checked against SFTConfig's fields when the config was built; may override the defaults above
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[_Forward(on_log)] if on_log else None)
    if free:
        trainer.train_dataset = truncated(trainer.train_dataset, cfg.max_length, args.truncation_mode)
    if dtype != "float32" and not cfg.load_in_4bit:  # peft upcasts LoRA A/B only: modules_to_save copies and trained
        for p in trainer.model.parameters():  # biases would stay half (fp16's GradScaler refuses them; bf16 loses precision)
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    result = trainer.train()
    trainer.save_model(str(out_dir))  # adapter + tokenizer, written by the main process only under accelerate
    n_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    history = [h for h in trainer.state.log_history if "loss" in h]
    stats = {
        "train_loss": float(result.training_loss),
        "first_logged_loss": history[0]["loss"] if history else float("nan"),
        "last_logged_loss": history[-1]["loss"] if history else float("nan"),
        "steps": int(result.global_step),
        "rows": len(rows),
        "tokens_per_epoch": int(n_tokens),
        "seconds": round(time.time() - start, 2),
        "loss_history": [{k: h[k] for k in ("step", "loss", "learning_rate", "grad_norm", "epoch") if k in h} for h in history],
    }
    stats["world_size"] = int(trainer.args.world_size)
    stats["sft_args"] = {k: getattr(trainer.args, k) for k in cfg.sft_args}  # as the trainer holds them, for the record
    if trainer.is_world_process_zero():
        (out_dir / "training_stats.json").write_text(json.dumps({**stats, "config": cfg.__dict__}, indent=2, default=str))
    if not math.isfinite(stats["train_loss"]):
        log.warning("training loss is not finite (%s); check the learning rate", stats["train_loss"])
    return stats


def truncated(dataset, max_length: int, mode: str = "keep_start"):
    """trl's own cut for padded training (the start or the end, as sft_args.truncation_mode says, then drop rows left
    with no answer token), which it skips with padding_free: the same rows train either way."""
    keep = slice(None, max_length) if mode == "keep_start" else slice(-max_length, None)
    cut = dataset.map(lambda x: {"input_ids": x["input_ids"][keep], "labels": x["labels"][keep]},
                      desc=f"Truncating to {max_length} tokens")
    return cut.filter(lambda x: any(label != -100 for label in x["labels"]), desc="Dropping rows with no answer token left")


def _Forward(on_log: Callable[[dict], None]):
    """A TrainerCallback handing each log entry of the main process to on_log (the tracker's live curve), since
    report_to stays "none": trl's own WandbCallback would put every metric of the run on its step axis."""
    from transformers import TrainerCallback

    class Forward(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                on_log({"step": state.global_step, **logs})

    return Forward()
