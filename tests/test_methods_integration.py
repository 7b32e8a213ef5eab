"""Each generation method runs one round of the loop on the packaged models (SmolLM2 teaches, for speed)."""
import json
from pathlib import Path

import pytest

from loop.config import load_config
from loop.controller import run

pytestmark = pytest.mark.integration
METHODS = Path(__file__).resolve().parents[1] / "configs" / "methods"
SMALL = {  # shrink each method's round so the whole file takes a few minutes on 2 cores
    "daig": ["generation.daig.examples_per_round=4", "generation.daig.answer_max_tokens=64"],
    "self_instruct": ["generation.self_instruct.prompts_per_round=1", "generation.self_instruct.max_tokens=160",
                      "generation.self_instruct.gen_instance_max_tokens=64", "generation.self_instruct.clf_instance_max_tokens=64"],
    "alpaca": ["generation.alpaca.prompts_per_round=1", "generation.alpaca.max_tokens=256"],
    "evol_instruct": ["generation.evol.items_per_round=3", "generation.evol.max_tokens=64", "generation.evol.answer_max_tokens=64"],
    "dynosaur": ["generation.dynosaur.tasks_per_round=1", "generation.dynosaur.rows_per_task=4", "generation.dynosaur.max_tokens=160"],
}


@pytest.mark.parametrize("method", sorted(SMALL))
def test_method_runs_one_round_of_the_loop(method, tmp_path):
    cfg = load_config(METHODS / f"{method}.yaml", [
        "rounds=1", "generation.teacher.backend=local", "generation.teacher.model=smollm2-135m-instruct", f"generation.teacher.cache_path={tmp_path / 'cache.sqlite'}",
        "training.max_steps=2", "eval.generation_samples=1", "eval.max_new_tokens=8", "tracking.wandb=false",
        "eval.validation_per_task=0", "eval.test_per_task=0", "eval.rolling_heldout=true", *SMALL[method]])
    assert cfg.generation.method == method
    (m,) = run(cfg, tmp_path / "run")
    rdir = tmp_path / "run" / "rounds" / "1"
    kept = [json.loads(x) for x in (rdir / "data.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (rdir / "rejected.jsonl").read_text().splitlines()]
    assert m["teacher_calls"] > 0 and m["n_kept"] == len(kept)
    assert kept or rejected, "a round must account for what the teacher wrote"
    schema = ["id", "round", "method", "task", "teacher_model", "requests", "provenance", "filters"]  # generation/rows.py
    for row in kept + rejected:
        assert list(row)[:len(schema)] == schema and row["id"] and row["requests"], row
    for row in kept:
        assert row["method"] == method and row["task"] and row["instruction"] and row["output"]
        assert all({"filter", "kept", "reason"} <= set(d) and d["kept"] for d in row["filters"])
    for row in rejected:
        assert row["reason"] and "stage" in row
    if kept and any(r["split"] == "train" for r in kept):
        assert m["train_steps"] == 2 and (rdir / "adapter" / "adapter_model.safetensors").exists()
    print(method, "kept", len(kept), "rejected", m["rejected"], "calls", m["teacher_calls"])
