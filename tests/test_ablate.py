"""`daig ablate`: arms x seeds as real runs (loopback teacher, tiny student) sharing one teacher cache."""
import json

import yaml

from loop.ablate import run_ablation
from loop.config import to_dict
from test_resume import _config


def test_ablation_grid_shares_the_cache_and_summarises(tmp_path, tiny_corpus, fake_openai, tiny_model):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(to_dict(_config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, tmp_path / "shared.sqlite"))))
    abl = tmp_path / "abl.yaml"
    sets = ["eval.validation_per_task=1", "eval.test_per_task=1", "eval.heldout_chunks=0.6", "generation.chunk_words=25"]
    abl.write_text(yaml.safe_dump({"base": "base.yaml", "overrides": ["rounds=2", *sets], "seeds": [0, 1], "group": "t",
                                   "arms": {"uniform": ["feedback.policy=uniform"], "ucb": ["feedback.policy=ucb"]}}, sort_keys=False))
    out = tmp_path / "abl"
    rows = run_ablation(abl, out)
    assert [(r["arm"], r["seed"], r["status"]) for r in rows] == [("uniform", 0, "done"), ("uniform", 1, "done"), ("ucb", 0, "done"), ("ucb", 1, "done")]
    assert [json.loads(x) for x in (out / "summary.jsonl").read_text().splitlines()] == rows
    for r in rows:
        assert r["rounds"] == 2 and r["final_eval_loss"] > 0 and r["kept"] > 0 and r["teacher_requests"] == 2 * 16
        m = json.loads((out / r["run_dir"] / "metrics.jsonl").read_text().splitlines()[-1])
        assert m["task_eval_loss_shrunk"] is None  # uniform and ucb read raw losses (shrinkage is for loss_softmax, sedi_prune)
        cfg = yaml.safe_load((out / r["run_dir"] / "config.yaml").read_text())
        assert cfg["seed"] == r["seed"] and cfg["tracking"]["group"] == "t" and cfg["tracking"]["run_name"] == f"{r['arm']}-seed{r['seed']}"
    # Round 1 samples uniformly in every arm, so an arm with the same seed as an earlier one gets round 1 from the cache.
    first, again = rows[0], rows[2]
    assert again["teacher_calls"] < first["teacher_calls"]
    table = (out / "summary.md").read_text()
    assert "| uniform | 2 |" in table and "| ucb | 2 |" in table and "±" in table
    assert "paired difference of macro test loss to uniform" in table and next(l for l in table.splitlines() if l.startswith("| ucb | ") and "[" in l)
    assert "round 2: requests, test loss" in table and "Eval sets: built once" in table
    assert all(r["final_test_loss"] > 0 and len(r["curve"]) == 2 and r["curve"][1]["teacher_requests"] == 32 for r in rows)

    # The eval sets are built once, in OUT/eval/, and every arm and seed reads those bytes. Counted at the edge: the
    # server saw the build's calls once plus each arm's own paid calls.
    for r in rows:
        for name in ("validation.jsonl", "test.jsonl", "heldout_chunks.json", "build.json"):
            assert (out / r["run_dir"] / "eval" / name).read_bytes() == (out / "eval" / name).read_bytes(), name
    build = json.loads((out / "eval" / "build.json").read_text())
    assert build["teacher_calls"] > 0 and len(fake_openai.requests) == build["teacher_calls"] + sum(r["teacher_calls"] for r in rows)

    n = len(fake_openai.requests)
    assert run_ablation(abl, out) == rows and len(fake_openai.requests) == n  # rerunning a finished ablation redoes nothing
