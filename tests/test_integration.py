"""One full round on the packaged SmolLM2 (student, and teacher for speed), on a tiny corpus."""
import json

import pytest

from loop.config import load_config
from loop.controller import run

pytestmark = pytest.mark.integration


def test_one_round_on_packaged_smollm2(tmp_path, tiny_corpus):
    cfg = load_config(None, [f"generation.domain_path={tiny_corpus}", "generation.teacher.model=smollm2-135m-instruct",
                             "student=smollm2-135m-instruct", "rounds=1", "generation.daig.examples_per_round=8",
                             "generation.daig.answer_max_tokens=96", "generation.tasks=[question_answering]", "training.max_steps=2", "eval.generation_samples=1",
                             "eval.max_new_tokens=16", "tracking.wandb=false", "eval.validation_per_task=0", "eval.test_per_task=0", "eval.rolling_heldout=true", "generation.daig.max_example_similarity=1.0",
                             # Plumbing with a 135M teacher: its rows fail the grounding gates (tested in test_grounding.py).
                             "generation.grounding.min_instruction_grounding=0", "generation.grounding.min_answer_support=0",
                             "generation.grounding.reject_unsupported_numbers=false", "generation.daig.instruction_max_tokens=128", "generation.novelty.filter=none",
                             f"generation.teacher.cache_path={tmp_path / 'cache.sqlite'}"])
    out = tmp_path / "run"
    (m,) = run(cfg, out)
    assert m["n_generated"] == 8 and m["teacher_calls"] >= 8 and m["teacher_tokens"] > 0
    assert m["n_kept"] >= 2, f"SmolLM2 should keep some rows: {m['rejected']}"
    assert m["train_steps"] == 2 and m["train_loss"] is not None
    assert any(v is not None for v in m["task_eval_loss"].values())
    rows = [json.loads(x) for x in (out / "rounds" / "1" / "data.jsonl").read_text().splitlines()]
    assert all(r["teacher_model"] == "smollm2-135m-instruct" and r["instruction"] and r["output"] for r in rows)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loop.models import resolve_model

    base = resolve_model("smollm2-135m-instruct", cfg.cache_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(out / "rounds" / "1" / "adapter"))
    tok = AutoTokenizer.from_pretrained(out / "rounds" / "1" / "adapter")
    ids = tok.apply_chat_template([{"role": "user", "content": "How do I reset the controller?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
