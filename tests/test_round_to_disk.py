"""Rounds go to disk as their rows are decided (issue 16): a DAIG round hands its rows over a window at a time and
holds none of them; the run writes them to a hidden file that becomes rounds/<r>/data.jsonl only when whole, so a
kill mid-round leaves no half file and the resumed round writes the same bytes without paying a call twice
(counted at the loopback server).

Run: pytest tests/test_round_to_disk.py -q
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from openai_server import FakeOpenAI
from test_overlap import plan

from generation.filters.rules import NoveltyFilter
from generation.methods.daig import run_daig_round
from generation.teacher.backends import OpenAITeacher
from generation.teacher.cache import Budget, CachedTeacher
from loop.config import load_config, to_dict
from loop.controller import run

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


def _round(server, cfg, pool, the_plan, emit=None):
    teacher = CachedTeacher(OpenAITeacher("fake-teacher", server.base_url, "", 4, 10.0, 0), None, Budget())
    novelty = NoveltyFilter(cfg.novelty.threshold, cfg.novelty.no_token_text)
    novelty.add([item.instruction for items in pool.values() for item in items])
    return run_daig_round(teacher, the_plan, cfg, round_idx=1, seed=5, novelty=novelty, tasks=tuple(pool), emit=emit)


def test_a_round_hands_its_rows_over_a_window_at_a_time_and_holds_none():
    cfg, pool, the_plan = plan(30)
    cfg.daig.window = 7
    with FakeOpenAI() as server:
        kept, rejected, stats = _round(server, cfg, pool, the_plan)
        server.requests.clear()
        windows = []  # (kept, rejected, requests the server had seen when they were handed over)
        got = _round(server, cfg, pool, the_plan, emit=lambda k, r: windows.append((k, r, len(server.requests))))
    assert len(windows) == 5, "30 instructions in windows of 7"
    assert got[0] == [] and got[1] == [], "with emit the round holds no rows"
    assert got[2] == stats, "the same stats"
    assert [x for k, _, _ in windows for x in k] == kept, "the same kept rows, in order"
    assert sorted((x for _, r, _ in windows for x in r), key=lambda x: x["id"]) == sorted(rejected, key=lambda x: x["id"])
    seen = [n for _, _, n in windows]
    assert seen == sorted(seen) and seen[0] < seen[-1], "each window's rows are handed over before the next window's requests go out"
    assert all(x["id"] < f"r1-{7 * (i + 1):05d}" for i, (k, _, _) in enumerate(windows) for x in k), "a window holds its own rows"


def _config(tiny_corpus, base_url, tiny_model, cache, window):
    return load_config(None, [f"generation.domain_path={tiny_corpus}", "generation.teacher.backend=openai",
                              f"generation.teacher.base_url={base_url}", "generation.teacher.model=fake-teacher",
                              "generation.teacher.api_key_env=", "generation.teacher.max_concurrency=1",
                              "generation.daig.examples_per_round=9", f"generation.daig.window={window}", "generation.novelty.filter=none",
                              f"student={tiny_model}", "rounds=1", "num_threads=1", "training.max_steps=1", "eval.generation_samples=1",
                              "eval.max_new_tokens=4", "tracking.wandb=false", "eval.validation_per_task=0", "eval.test_per_task=0", "feedback.policy=uniform",
                              f"generation.teacher.cache_path={cache}"])


def test_a_run_killed_mid_round_leaves_no_half_file_and_resumes_to_the_same_bytes(tmp_path, tiny_corpus, tiny_model, fake_openai):
    ref = tmp_path / "ref"
    run(_config(tiny_corpus, fake_openai.base_url, tiny_model, tmp_path / "ref.sqlite", window=3), ref)
    whole = tmp_path / "whole"  # the round as one window: the same kept rows
    run(_config(tiny_corpus, fake_openai.base_url, tiny_model, tmp_path / "whole.sqlite", window=4096), whole)
    assert (whole / "rounds/1/data.jsonl").read_bytes() == (ref / "rounds/1/data.jsonl").read_bytes()

    cfg_path, out = tmp_path / "cfg.yaml", tmp_path / "killed"
    cfg_path.write_text(yaml.safe_dump(to_dict(_config(tiny_corpus, fake_openai.base_url, tiny_model, tmp_path / "k.sqlite", window=3))))
    fake_openai.requests.clear()
    fake_openai.answered.clear()
    proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "run", str(cfg_path), "--out", str(out)], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    on_disk = {}

    def kill(number, body):  # the third window's first instruction: two windows are decided
        if number == 13:
            rdir = out / "rounds" / "1"
            on_disk["hidden"] = sum(len(p.read_text().splitlines()) for p in rdir.glob(".data.jsonl.*"))
            on_disk["data"] = (rdir / "data.jsonl").exists()
            proc.send_signal(signal.SIGKILL)
            return True
    fake_openai.before_reply = kill
    proc.wait(timeout=240)
    fake_openai.before_reply = None
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    kept_early = sum(1 for x in (ref / "rounds/1/data.jsonl").read_text().splitlines() if json.loads(x)["id"] < "r1-00006")
    assert on_disk == {"hidden": kept_early, "data": False}, "two windows' rows are on disk, in the hidden file only"

    answered = {json.dumps(b, sort_keys=True) for b in fake_openai.answered}
    asked = len(fake_openai.requests)
    done = subprocess.run([sys.executable, "-m", "loop.cli", "resume", str(out)], env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [b for b in fake_openai.requests[asked:] if json.dumps(b, sort_keys=True) in answered], "no answered request is sent again"
    for name in ("data.jsonl", "rejected.jsonl"):
        assert (out / "rounds/1" / name).read_bytes() == (ref / "rounds/1" / name).read_bytes(), name
    assert not list((out / "rounds/1").glob(".*.jsonl.*")), "the kill's hidden file is cleaned up"
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    ref_metrics = json.loads((ref / "metrics.jsonl").read_text().splitlines()[0])
    assert (metrics["n_kept"], metrics["rejected"], metrics["run_teacher_requests"]) == \
        (ref_metrics["n_kept"], ref_metrics["rejected"], ref_metrics["run_teacher_requests"])


def test_training_reads_the_rounds_its_data_mix_picks_from_disk(tmp_path, tiny_corpus, tiny_model, fake_openai):
    """The run holds no rows: each round's training reads them back, every round's (restart: all) or this round's
    only (continue: new)."""
    trained = {}
    for mode in ("restart", "continue"):
        cfg = _config(tiny_corpus, fake_openai.base_url, tiny_model, tmp_path / "c.sqlite", window=4)
        cfg.rounds, cfg.training.adapter_mode = 2, mode
        out = tmp_path / mode
        run(cfg, out)
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        cards = [json.loads((out / f"rounds/{r}/adapter/daig_adapter.json").read_text()) for r in (1, 2)]
        trained[mode] = ([m["n_train"] for m in metrics], [c["rows"] for c in cards])
    (n1, n2), rows = trained["restart"]
    assert n1 and n2 and rows == [n1, n1 + n2], "restart trains on every round's rows so far"
    (n1, n2), rows = trained["continue"]
    assert rows == [n1, n2], "continue (data_mix auto: new) trains round 2 on its own rows"
