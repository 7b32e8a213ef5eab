"""The whole loop, 2 rounds: loopback OpenAI-protocol teacher, tiny real student, real training."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from loop.config import load_config
from loop.controller import run, split_per_task

REPO = Path(__file__).resolve().parents[1]
PLANTED = "sk-planted-SECRET-4242"


def _config(tmp_path, tiny_corpus, base_url, tiny_model, *extra):
    return load_config(None, [f"generation.domain_path={tiny_corpus}", "generation.teacher.backend=openai",
                              f"generation.teacher.base_url={base_url}", "generation.teacher.model=fake-teacher",
                              "generation.teacher.api_key_env=DAIG_TEST_KEY", "generation.daig.examples_per_round=12",
                              f"student={tiny_model}", "rounds=2", "num_threads=1", "training.max_steps=3",
                              "training.learning_rate=0.005", "training.logging_steps=1", "eval.generation_samples=2", "eval.max_new_tokens=4",
                              "eval.rolling_heldout=true", "eval.validation_per_task=0", "eval.test_per_task=0",
                              "eval.heldout_fraction=0.3", "tracking.run_name=test", "generation.novelty.filter=none",
                              f"generation.teacher.cache_path={tmp_path / 'cache.sqlite'}", *extra])


def test_two_rounds_end_to_end(tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    monkeypatch.setenv("DAIG_TEST_KEY", PLANTED)
    monkeypatch.setenv("WANDB_API_KEY", "wandb-planted-SECRET-" + "9" * 32)
    monkeypatch.setenv("WANDB_MODE", "offline")
    from conftest import TEST_DATA

    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model,
                  f"eval.benchmark_path={TEST_DATA / 'self_instruct_user_oriented_instructions.jsonl'}", "eval.benchmark_size=3",
                  "feedback.shrink=false")  # the raw-loss policy path; shrinkage is checked in test_ablate and test_stats
    out = tmp_path / "run"
    history = run(cfg, out)

    assert [m["round"] for m in history] == [1, 2]
    assert all(0 < m["chunks_covered"] <= m["chunks_total"] for m in history) and history[0]["new_chunks_covered"] == history[0]["chunks_covered"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(history))
    for m in lines:
        for key in ("round", "task_weights", "task_eval_loss", "n_generated", "n_kept", "teacher_calls", "teacher_tokens", "seconds"):
            assert key in m, key
        assert math.isclose(sum(m["task_weights"].values()), 1.0, rel_tol=1e-6)
        assert set(m["task_eval_se"]) == set(m["task_eval_n"]) == set(m["task_eval_loss"]) and m["task_eval_loss_shrunk"] is None
        assert all((m["task_eval_se"][t] is None) == (n < 2) for t, n in m["task_eval_n"].items())  # an SE needs 2 rows
        assert m["n_generated"] == 12 and m["teacher_calls"] == 24 and m["teacher_tokens"] > 0
        assert 0 <= m["benchmark_rouge_l"] <= 1 and m["benchmark_rouge_l_base"] == lines[0]["benchmark_rouge_l_base"]
    # Round 2 samples with the weights round 1's losses produced, higher loss -> higher weight.
    r1 = lines[0]
    assert lines[1]["task_weights"] == r1["next_task_weights"]
    known = {t: v for t, v in r1["task_eval_loss"].items() if v is not None}
    assert len(known) >= 2
    hi, lo = max(known, key=known.get), min(known, key=known.get)
    assert r1["next_task_weights"][hi] > r1["next_task_weights"][lo]
    assert len(fake_openai.requests) == 48

    rows = [json.loads(x) for x in (out / "rounds" / "1" / "data.jsonl").read_text().splitlines()]
    assert len(rows) == lines[0]["n_kept"] and {r["split"] for r in rows} == {"train", "eval"}
    for r in rows:
        assert {"id", "round", "method", "task", "teacher_model", "requests", "provenance", "filters", "instruction", "input", "output"} <= set(r)
        assert {"example_ids", "chunk_id"} <= set(r["provenance"]) and set(r["requests"]) == {"instruction", "answer"}
    assert (out / "rounds" / "1" / "rejected.jsonl").exists()
    assert (out / "config.yaml").exists()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for r in (1, 2):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(out / "rounds" / str(r) / "adapter"))
        tok = AutoTokenizer.from_pretrained(out / "rounds" / str(r) / "adapter")
        gen = model.generate(**tok("Hold the", return_tensors="pt"), max_new_tokens=3, do_sample=False)
        assert gen.shape[1] > 2
        card = json.loads((out / "rounds" / str(r) / "adapter" / "daig_adapter.json").read_text())
        assert card["round"] == r and len(card["data_sha256"]) == 64 and card["base_model"] == tiny_model
        assert (out / "rounds" / str(r) / "adapter" / "README.md").exists()

    (wandb_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    logged = wandb_file.read_bytes()
    run_id = wandb_file.stem.removeprefix("run-")
    # W&B conventions: artifacts named per run with round-N and latest aliases, a job type, round as the x-axis of
    # round metrics (define_metric), and each round's trainer log (loss, learning rate, grad norm) against its own step
    for name in (f"adapter-{run_id}", f"data-{run_id}", "round-2", "latest", "generate-train", "task_weights_table", "train_curve",
                 "generation_metrics/rouge_l", "train/round1/*", "train/round2/learning_rate", "train/round2/grad_norm"):
        assert name.encode() in logged, f"{name} not logged to W&B"
    for f in out.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert PLANTED.encode() not in data and b"wandb-planted-SECRET" not in data, f"secret leaked into {f}"

    with pytest.raises(FileExistsError, match="already holds a run"):
        run(cfg, out)


def test_split_keeps_heldout_per_task():
    import random

    rows = [{"task": t} for t in ["a"] * 5 + ["b"] * 2 + ["c"]]
    split_per_task(rows, 0.2, 1, random.Random(0))
    by = {t: [r["split"] for r in rows if r["task"] == t] for t in "abc"}
    assert by["a"].count("eval") == 1 and by["b"].count("eval") == 1 and by["c"] == ["train"]


@pytest.mark.parametrize("args,message", [
    (["generation.domain_path=/nonexistent/docs"], "error: "),
    (["generation.teacher.backend=openai", "generation.teacher.api_key_env=DAIG_UNSET_VAR"], "DAIG_UNSET_VAR is not set"),
    (["generation.teacher.backend=openai", "generation.teacher.base_url=http://127.0.0.1:9/v1", "generation.teacher.api_key_env="],
     "cannot reach the teacher endpoint"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, tiny_corpus, args, message, monkeypatch):
    monkeypatch.delenv("DAIG_UNSET_VAR", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"generation:\n  domain_path: {tiny_corpus}\ntracking:\n  wandb: false\n")
    proc = subprocess.run([sys.executable, "-m", "loop.cli", "run", str(cfg), "--out", str(tmp_path / "o"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last


def test_budget_cap_stops_the_run_cleanly(tmp_path, tiny_corpus, fake_openai, tiny_model):
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "rounds=3", "generation.teacher.api_key_env=",
                  "generation.teacher.max_teacher_calls=30", "tracking.wandb=false", "eval.generation_samples=0")
    history = run(cfg, tmp_path / "run")
    assert len(history) == 2, "round 1 spends 24 calls, round 2 hits the cap, round 3 never starts"
    assert history[-1]["budget_exhausted"] == "max_teacher_calls" and history[0]["budget_exhausted"] is None
    assert len(fake_openai.requests) == 30 == history[-1]["run_teacher_calls"]
    assert history[1]["rejected"].get("teacher_budget_exhausted", 0) > 0
    assert (tmp_path / "run" / "rounds" / "2" / "data.jsonl").exists() and (tmp_path / "run" / "rounds" / "2" / "adapter").exists()


def test_training_step_under_accelerate_launch_two_cpu_processes(tmp_path, tiny_corpus, fake_openai, tiny_model):
    """launcher=accelerate: generation in this process, training as a 2-process gloo DDP `accelerate launch`."""
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "rounds=1", "generation.teacher.api_key_env=",
                  "tracking.wandb=false", "eval.generation_samples=0", "training.launcher=accelerate",
                  f"training.accelerate_config={REPO / 'configs' / 'accelerate' / 'cpu_ddp.yaml'}")
    (m,) = run(cfg, tmp_path / "run")
    stats = json.loads((tmp_path / "run" / "rounds" / "1" / "adapter" / "training_stats.json").read_text())
    assert stats["world_size"] == 2 and m["train_steps"] == 3
    assert sorted(p.name for p in (tmp_path / "run" / "rounds" / "1").iterdir()) == [
        "adapter", "data.jsonl", "eval_samples.jsonl", "rejected.jsonl"], "no scratch folders left behind"
    assert any(v is not None for v in m["task_eval_loss"].values())


def test_active_uncertainty_runs_through_the_loop(tmp_path, tiny_corpus, fake_openai, tiny_model, monkeypatch):
    """The controller builds eval.uncertainty.Uncertainty from the held-out rows and the policy reads what it measured."""
    monkeypatch.setenv("DAIG_TEST_KEY", PLANTED)
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, "rounds=1", "feedback.policy=active_uncertainty",
                  "feedback.uncertainty_perturbations=2", "tracking.wandb=false")
    (m,) = run(cfg, tmp_path / "run")
    measured = m["feedback_evidence"]["prompt_uncertainty"]
    assert set(measured) == set(m["task_weights"]) and any(v is not None and v >= 0 for v in measured.values())
    assert math.isclose(sum(m["next_task_weights"].values()), 1.0)
