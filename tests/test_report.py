"""`daig report` and `daig trace` on an ablation folder made by `daig ablate` (2 arms x 2 seeds of the real loop: tiny
student, loopback teacher, one shared teacher cache) and on the run folders inside it."""
import json
import re
import shutil
import statistics

import pytest
import yaml

from conftest import TEST_DATA, write_tiny_corpus
from generation.data.corpus import load_corpus
from generation.data.pool import load_pool
from loop.ablate import run_ablation, summarize
from loop.cli import main
from loop.config import load_config, to_dict
from loop.report import filters_text, write_report
from loop.trace import TraceError, trace
from openai_server import FakeOpenAI

PNG = '<img src="data:image/png;base64,'
ARMS = {"uniform": ["feedback.policy=uniform"],
        # a low temperature, because the tiny model's task losses differ only in the second decimal
        "loss_softmax": ["feedback.policy=loss_softmax", "feedback.temperature=0.002"]}


@pytest.fixture(scope="session")
def ablation(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("ablation")
    corpus = write_tiny_corpus(root / "corpus")
    with FakeOpenAI() as server:
        base = load_config(None, [
            f"generation.domain_path={corpus}", "generation.teacher.backend=openai", f"generation.teacher.base_url={server.base_url}",
            "generation.teacher.model=fake-teacher", "generation.teacher.api_key_env=", f"generation.teacher.cache_path={root / 'cache.sqlite'}",
            # the loopback teacher's instructions differ by one word: this threshold keeps some and rejects others
            "generation.daig.examples_per_round=12", "generation.novelty.threshold=0.92", f"student={tiny_model}", "rounds=2", "num_threads=1",
            "training.max_steps=2", "eval.generation_samples=1", "eval.max_new_tokens=4", "eval.validation_per_task=2",
            "eval.test_per_task=2", "generation.chunk_words=25",
            f"eval.benchmark_path={TEST_DATA / 'self_instruct_user_oriented_instructions.jsonl'}", "eval.benchmark_size=2", "tracking.wandb=false"])
        (root / "base.yaml").write_text(yaml.safe_dump(to_dict(base)), encoding="utf-8")
        (root / "abl.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "arms": ARMS, "seeds": [0, 1], "group": "t"}), encoding="utf-8")
        run_ablation(root / "abl.yaml", root / "out")
    return root / "out"


def _rows(run_dir, name):
    return [json.loads(x) for f in sorted((run_dir / "rounds").glob(f"*/{name}")) for x in f.read_text().splitlines()]


def test_run_report_has_every_plot_table_and_escaped_examples(ablation, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(ablation / "arms" / "loss_softmax" / "seed0", run_dir)
    # Markup in a teacher reply must reach the page as text.
    rejected_file = run_dir / "rounds" / "1" / "rejected.jsonl"
    rows = [json.loads(x) for x in rejected_file.read_text().splitlines()]
    rows[0]["raw"] = "<script>alert('x')</script> & more"
    rejected_file.write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = write_report(run_dir)
    page = out.read_text()
    assert out == run_dir / "report.html"
    assert '<td class="text">eval sets</td><td class="text">DAIG-built from held-out chunks (0.2 of the corpus)</td>' in page  # which split
    for alt in ("task weights", "per-task eval loss", "rejections", "teacher cost", "benchmark"):
        assert f'{PNG}' in page and f'alt="{alt}"' in page, alt
    assert page.count(PNG) == 5
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "<th>teacher calls</th>" in page and "<th>r2 loss</th>" in page and "<th>next weight</th>" in page
    # every round's table row and every round's examples, kept and rejected
    assert len(re.findall(r'<tr><td class="num">\d+</td>', page)) == len(metrics) == 2
    kept, rejected = _rows(run_dir, "data.jsonl"), _rows(run_dir, "rejected.jsonl")
    assert kept and rejected
    for r in (1, 2):
        assert f"<h4>Round {r}: " in page
    shown_rejected = next(r for r in rejected if r["round"] == 2)  # each round shows its first row of each reason
    assert kept[0]["id"] in page and shown_rejected["id"] in page and shown_rejected["reason"] in page
    assert re.search(r"novelty: rejected \(similar_to_pool\), score [\d.]+; nearest: &#x27;What does", page)  # a filter decision


def test_ablation_report_compares_arms(ablation, tmp_path):
    folder = tmp_path / "ablation"
    shutil.copytree(ablation, folder, ignore=shutil.ignore_patterns("adapter", "cache.sqlite*"))
    summary = [json.loads(x) for x in (folder / "summary.jsonl").read_text().splitlines()]
    # an arm that crashed before its first round, as `daig ablate` records it
    failed = summarize("ucb", 0, "arms/ucb/seed0", ["feedback.policy=ucb"], [], "failed: RuntimeError: out of memory", 3.0)
    (folder / "summary.jsonl").write_text("".join(json.dumps(s) + "\n" for s in summary + [failed]))
    out = tmp_path / "nested" / "ablation.html"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    page = out.read_text()
    assert 'alt="cost vs quality"' in page and 'alt="curves per arm"' in page and 'alt="test loss vs teacher requests"' in page
    assert page.count(PNG) == 3 + 4 * 5  # three ablation plots, then every finished run's five
    assert "0 done, 1 failed" in page and "failed: RuntimeError: out of memory" in page
    for arm in ARMS:
        losses = [s["final_eval_loss"] for s in summary if s["arm"] == arm]
        mean, std = statistics.mean(losses), statistics.stdev(losses)
        assert f"{mean:.4g} ± {std:.2g}" in page, arm
        assert f"<summary>{arm}, seed 1 (arms/{arm}/seed1)</summary>" in page
    assert "feedback.temperature=0.002" in page and "2 done" in page
    assert "Paired difference to uniform" in page and "ucb</td><td" in page  # the crashed arm: no seed paired


def test_trace_kept_and_rejected_rows(ablation):
    run_dir = ablation / "arms" / "uniform" / "seed0"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    g = config["generation"]
    pool = {i.id: i for i in load_pool(g["general_pool"], "general") + load_pool(g["domain_pool"], "domain")}
    chunks = {c.id: c.text for c in load_corpus(g["domain_path"], g["chunk_words"])}
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kept = _rows(run_dir, "data.jsonl")[0]
    rejected = next(r for r in _rows(run_dir, "rejected.jsonl") if r["round"] == 2)

    for row, was_kept in ((kept, True), (rejected, False)):
        t = trace(run_dir, row["id"])
        assert (t["kept"], t["round"], t["task"], t["method"]) == (was_kept, row["round"], row["task"], "daig")
        prov = row["provenance"]
        assert [e["id"] for e in t["pool_examples"]] == prov["example_ids"]
        assert [e["instruction"] for e in t["pool_examples"]] == [pool[i].instruction for i in prov["example_ids"]]
        assert t["chunk_id"] == prov["chunk_id"] and t["chunk"] == chunks[prov["chunk_id"]]
        assert t["filters"] == row["filters"] and t["filters"][0]["filter"] == "instruction"
        assert [x["round"] for x in t["task_losses"]] == list(range(row["round"], 3))
        assert [x["task_eval_loss"] for x in t["task_losses"]] == [m["task_eval_loss"][row["task"]] for m in metrics[row["round"] - 1:]]
        stages = {r["stage"]: r for r in t["requests"]}
        assert stages["instruction"]["key"] == row["requests"]["instruction"]
        assert stages["instruction"]["cached_reply"].startswith(("Task: What does the passage say about", "Task: Classify"))
    assert t["chunk_source"] == "re-chunked corpus" and t["raw"] == stages["instruction"]["cached_reply"]  # the rejected row
    assert set(stages) == {"instruction"} and t["reason"] == rejected["reason"]


def test_trace_cli_text_json_and_unknown_id(ablation, capsys):
    run_dir = ablation / "arms" / "loss_softmax" / "seed1"
    row = _rows(run_dir, "data.jsonl")[-1]
    assert main(["trace", str(run_dir), row["id"]]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{row['id']}: round {row['round']}, method daig, task {row['task']}, kept")
    for section in ("sampled pool examples:", f"domain chunk {row['provenance']['chunk_id']} (row context):", "teacher requests (fake-teacher",
                    "  answer: " + row["requests"]["answer"], "filter decisions:", f"eval loss of task '{row['task']}' from round"):
        assert section in text, section

    assert main(["trace", str(run_dir), row["id"], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["output"] == row["output"] and data["chunk"] == row["context"]

    with pytest.raises(TraceError, match=r"no row with id 'r1-0001' .*closest ids: r1-000"):
        trace(run_dir, "r1-0001")
    assert main(["trace", str(run_dir), "r9-99999"]) == 2
    assert "error: no row with id 'r9-99999'" in capsys.readouterr().err


def test_report_errors_and_old_filter_format(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    # runs made before filter decisions were a list stored a flat dict of scores
    assert filters_text({"max_example_rouge_l": 0.125}) == "max_example_rouge_l=0.125"


def test_loss_softmax_reads_losses_shrunk_by_their_standard_error(ablation):
    """The loss_softmax arm's policy saw shrunk losses: a task measured on fewer than 2 rows gets weight 0 on its own
    loss, so every such task reads the same value (the mean of the tasks that have a standard error)."""
    for seed in (0, 1):
        for line in (ablation / "arms" / "loss_softmax" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines():
            m = json.loads(line)
            assert set(m["task_eval_loss_shrunk"]) == set(m["task_eval_loss"]) == set(m["task_eval_se"])
            thin = [t for t, v in m["task_eval_loss"].items() if v is not None and m["task_eval_n"][t] < 2]
            assert all(m["task_eval_own_weight"][t] == 0 for t in thin)
            assert len({round(m["task_eval_loss_shrunk"][t], 9) for t in thin}) <= 1
            assert all(0 <= w <= 1 for w in m["task_eval_own_weight"].values() if w is not None)
