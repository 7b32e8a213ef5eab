"""Per-task eval of the student with an adapter: answer-token loss in length-sorted batches, and a few
greedy sample answers scored by ROUGE-L against the teacher's answers.

Tokenization mirrors trl's prompt/completion handling: the completion starts where the tokenized prompt
(with the generation prompt) and the tokenized prompt+completion diverge.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from eval.config import EvalConfig
from eval.sets import EvalSetError
from eval.stats import ratio_se


def load_student(model_path: str, adapter_dir: str | None, num_threads: int, device: str = "cpu", dtype: str = "float32",
                 attn: str = ""):
    """The student (with its adapter) in eval mode on `device` in `dtype`, and its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(num_threads)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir or model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype), **({"attn_implementation": attn} if attn else {})).to(device)
    if adapter_dir:
        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval(), tokenizer


def encode(tokenizer, prompt: list[dict], completion: list[dict], max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with prompt positions set to -100."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    n = 0
    while n < min(len(prompt_ids), len(full_ids)) and prompt_ids[n] == full_ids[n]:
        n += 1
    labels = [-100] * n + full_ids[n:]
    return full_ids[:max_length], labels[:max_length]


def answer_nll(model, ids, mask, labels):
    """Per-token NLL of the answer tokens only, and the mask of where they are.

    The LM head (a vocab-sized matmul and softmax per position) runs only on answer positions: prompts are most
    of the tokens and their logits would be thrown away. Models that post-process logits take the plain path."""
    import torch

    target = labels[:, 1:]
    valid = target != -100
    cfg = model.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1][valid]
    else:
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        logits = model.get_output_embeddings()(hidden[valid])
    return torch.nn.functional.cross_entropy(logits.float(), target[valid], reduction="none"), valid


def sequence_nlls(model, tokenizer, seqs: list[tuple[list[int], list[int]]], batch_size: int, desc: str = "") -> list[list[float]]:
    """Per-token answer NLLs of each (input_ids, labels) sequence, in length-sorted batches (similar lengths share a batch)."""
    import torch

    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[list[float]] = [[] for _ in seqs]
    with torch.inference_mode(), tqdm(total=len(seqs), desc=desc, unit="ex", leave=False, disable=not desc) as bar:
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            width = max(len(seqs[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad)
            labels = torch.full((len(idx), width), -100)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, i in enumerate(idx):
                x, y = seqs[i]
                ids[j, :len(x)], labels[j, :len(y)], mask[j, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            nll, valid = answer_nll(model, ids.to(model.device), mask.to(model.device), labels.to(model.device))
            for j, part in zip(idx, torch.split(nll.cpu(), valid.sum(dim=1).tolist())):
                out[j] = part.tolist()
            bar.update(len(idx))
    return out


def task_losses(model, tokenizer, rows: list[dict], batch_size: int, max_length: int, desc: str = "eval") -> dict[str, dict]:
    """Token-weighted mean answer loss per task, with its standard error over examples:
    {task: {'loss', 'se', 'tokens', 'examples'}}."""
    encoded = [encode(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]
    per_example: dict[str, list[tuple[float, int]]] = {}
    for row, nlls in zip(rows, sequence_nlls(model, tokenizer, encoded, batch_size, desc)):
        per_example.setdefault(row["task"], []).append((sum(nlls), len(nlls)))
    out = {}
    for task, pairs in sorted(per_example.items()):
        sums, tokens = [p[0] for p in pairs], [p[1] for p in pairs]
        n = sum(tokens)
        out[task] = {"loss": sum(sums) / n if n else math.nan, "se": ratio_se(sums, tokens), "tokens": n, "examples": len(pairs)}
    return out


def sample_answers(model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int = 8) -> list[dict]:
    """Greedy student answers for rows, in left-padded batches, scored by ROUGE-L F1 against the reference."""
    import torch
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    try:
        for b in range(0, len(rows), batch_size):
            batch = rows[b:b + batch_size]
            texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in batch]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            for r, ids in zip(batch, gen[:, enc["input_ids"].shape[1]:]):
                answer = tokenizer.decode(ids, skip_special_tokens=True).strip()
                reference = r["completion"][0]["content"]
                out.append({"id": r.get("id", ""), "task": r["task"], "instruction": r["prompt"][-1]["content"],
                            "reference": reference, "student": answer, "rouge_l": scorer.score(reference, answer)["rougeL"].fmeasure})
    finally:
        tokenizer.padding_side = side
    return out


BUILTIN_BENCHMARK = Path(__file__).parent / "data" / "user_oriented_instructions.jsonl"  # Self-Instruct's 252 (data/README.md)


def benchmark_rows(raw: list[dict], size: int) -> list[dict]:
    """The first `size` held-out tasks, in the Self-Instruct format ({instruction, instances: [{input, output}]}) or
    flat ({instruction, input?, output}), as prompt/completion rows (loop/evalsets.py reads the file or dataset)."""
    rows = []
    for n, r in enumerate(raw[:size]):
        inst = (r.get("instances") or [r])[0]
        if not isinstance(inst, dict) or not r.get("instruction") or inst.get("output") is None:
            raise EvalSetError(f"eval.benchmark_path row {n + 1}: needs an instruction and an output (or instances[0].output); fix the benchmark")
        prompt = r["instruction"] + (f"\n\n{inst['input']}" if inst.get("input") else "")
        rows.append({"id": r.get("id", f"bench-{n}"), "task": "benchmark", "prompt": [{"role": "user", "content": prompt}],
                     "completion": [{"role": "assistant", "content": inst["output"]}]})
    return rows


def score_benchmark(model, tokenizer, rows: list[dict], max_new_tokens: int) -> dict:
    """Mean ROUGE-L and BLEU of the student's greedy answers on held-out benchmark rows."""
    scored = sample_answers(model, tokenizer, rows, max_new_tokens)
    metrics = generation_metrics(scored)
    return {"rouge_l": metrics.get("rouge_l", math.nan), "bleu": metrics.get("bleu", math.nan), "samples": scored}


def benchmark(model_path: str, adapter_dir: str | None, rows: list[dict], max_new_tokens: int, num_threads: int,
              device: str = "cpu", dtype: str = "float32", attn: str = "") -> dict:
    """score_benchmark for a model not loaded yet (the base model, once per run)."""
    model, tokenizer = load_student(model_path, adapter_dir, num_threads, device, dtype, attn)
    return score_benchmark(model, tokenizer, rows, max_new_tokens)


METRICS_DIR = Path(__file__).parent / "metrics"


def generation_metrics(samples: list[dict]) -> dict:
    """ROUGE-L and BLEU over all samples, exact match over classification ones, through `evaluate`
    metric scripts kept in eval/metrics (evaluate.load of a Hub metric fails offline)."""
    import evaluate as hf_evaluate

    if not samples:
        return {}
    preds, refs = [s["student"] for s in samples], [s["reference"] for s in samples]
    out = {"rouge_l": hf_evaluate.load(str(METRICS_DIR / "rouge_l")).compute(predictions=preds, references=refs)["rouge_l"],
           "bleu": hf_evaluate.load(str(METRICS_DIR / "bleu")).compute(predictions=preds, references=refs)["bleu"]}
    cls = [s for s in samples if s["task"] == "classification"]
    if cls:
        em = hf_evaluate.load(str(METRICS_DIR / "exact_match"))
        out["exact_match_classification"] = em.compute(predictions=[s["student"] for s in cls], references=[s["reference"] for s in cls])["exact_match"]
    return out


@dataclass
class EvalResult:
    """One evaluation of the student: per-task loss on the validation rows, greedy samples, and what was asked besides."""
    task_loss: dict[str, float] = field(default_factory=dict)
    task_tokens: dict[str, int] = field(default_factory=dict)
    task_se: dict[str, float] = field(default_factory=dict)  # standard error of each task's mean per-row loss
    task_n: dict[str, int] = field(default_factory=dict)  # rows per task
    loss: float = math.nan  # token-weighted over every row
    samples: list[dict] = field(default_factory=list)  # greedy answers (from the test rows when given)
    sample_rouge_l: float = math.nan
    generation_metrics: dict = field(default_factory=dict)
    benchmark: dict | None = None  # rouge_l, bleu, samples
    prompt_uncertainty: dict[str, float] | None = None
    test: dict[str, dict] | None = None  # task -> loss, se, examples, tokens on the test rows
    seconds: float = 0.0


def batch_for(asked: int, device: str) -> int:
    """eval.batch_size, 0 resolved by device: 8 rows a pass on the CPU (as before there was a choice), 32 on a GPU,
    whose kernels need wide batches to be busy. Eval keeps no activations for a backward pass; what grows is the LM
    head's output on answer positions: 32 rows x 300 answer tokens x a 152k vocabulary is 5.8 GB in float32."""
    return asked or (32 if device.startswith("cuda") else 8)


def evaluate(model_path: str, adapter_dir: str | None, rows: list[dict], cfg: EvalConfig, max_length: int,
             num_threads: int, desc: str = "eval", bench_rows: list[dict] = (), uncertainty=None,
             test_rows: list[dict] = (), device: str = "cpu", dtype: str = "float32", attn: str = "") -> EvalResult:
    """Per-task eval loss on rows (each with 'task', 'prompt', 'completion') plus sample generations, and the
    benchmark scored with the same loaded model when bench_rows are given; with `uncertainty` (an
    eval.uncertainty.Uncertainty), the per-task prompt uncertainty too. With test_rows, their per-task losses too
    ('test'), and the samples come from them: the test set is what is reported. device, dtype, attn: where the
    student runs (loop/device.py resolves them)."""
    start = time.time()
    model, tokenizer = load_student(model_path, adapter_dir, num_threads, device, dtype, attn)
    batch = batch_for(cfg.batch_size, device)
    losses = task_losses(model, tokenizer, rows, batch, max_length, desc=desc)
    test = task_losses(model, tokenizer, list(test_rows), batch, max_length, desc=f"{desc} (test)") if test_rows else None
    by_task: dict[str, list[dict]] = {}
    for r in test_rows or rows:
        by_task.setdefault(r["task"], []).append(r)
    # Round-robin over tasks so the samples cover every task before repeating one.
    picks = [rs[i] for i in range(max(map(len, by_task.values()), default=0)) for rs in by_task.values() if i < len(rs)]
    samples = sample_answers(model, tokenizer, picks[:cfg.generation_samples], cfg.max_new_tokens, batch) if cfg.generation_samples else []
    tokens = sum(v["tokens"] for v in losses.values())
    return EvalResult(
        task_loss={t: v["loss"] for t, v in losses.items()},
        task_tokens={t: v["tokens"] for t, v in losses.items()},
        task_se={t: v["se"] for t, v in losses.items()},
        task_n={t: v["examples"] for t, v in losses.items()},
        loss=sum(v["loss"] * v["tokens"] for v in losses.values()) / tokens if tokens else math.nan,
        samples=samples,
        sample_rouge_l=sum(s["rouge_l"] for s in samples) / len(samples) if samples else math.nan,
        generation_metrics=generation_metrics(samples),
        benchmark=score_benchmark(model, tokenizer, list(bench_rows), cfg.max_new_tokens) if bench_rows else None,
        prompt_uncertainty=uncertainty.measure(model, tokenizer) if uncertainty else None,
        test=test,
        seconds=round(time.time() - start, 2))
