"""Kill `daig run` with SIGKILL in generation, training and eval; `daig resume` must end with the same rows as an
uninterrupted run and the loopback teacher must never be asked again for a request it already answered."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loop.config import load_config, to_dict
from loop.controller import CHECKPOINT, resume, run

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


def _config(tmp_path, tiny_corpus, base_url, tiny_model, cache):
    return load_config(None, [f"generation.domain_path={tiny_corpus}", "generation.teacher.backend=openai",
                              f"generation.teacher.base_url={base_url}", "generation.teacher.model=fake-teacher",
                              "generation.teacher.api_key_env=", "generation.teacher.max_concurrency=1",
                              "generation.daig.examples_per_round=8", "generation.novelty.filter=none", f"student={tiny_model}",
                              "rounds=2", "num_threads=1", "training.max_steps=2", "eval.generation_samples=2",
                              "eval.max_new_tokens=4", "eval.heldout_fraction=0.3", "tracking.wandb=false", "eval.rolling_heldout=true",
                              "eval.validation_per_task=0", "eval.test_per_task=0",
                              f"generation.teacher.cache_path={cache}"])


def _rows(out: Path) -> list[list[str]]:
    return [sorted((out / "rounds" / str(r) / name).read_text().splitlines()) for r in (1, 2) for name in ("data.jsonl", "rejected.jsonl")]


def _key(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


def _stage(out: Path):
    try:
        st = json.loads((out / CHECKPOINT).read_text())
        return st["round"], st["stage"]
    except (OSError, ValueError):
        return None


WHEN = {  # how to spot each moment from outside the process
    "generation": None,  # the server kills the client while it waits for a reply (see below)
    "training": lambda out: (out / "rounds" / "1" / ".trainer").exists(),
    "eval": lambda out: _stage(out) == (1, "trained"),
}


@pytest.mark.parametrize("moment", list(WHEN))
def test_sigkill_then_resume_gives_the_uninterrupted_result(moment, tmp_path, tiny_corpus, fake_openai, tiny_model):
    ref = tmp_path / "ref"
    run(_config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, tmp_path / "ref.sqlite"), ref)
    expected = _rows(ref)
    n_requests = len(fake_openai.requests)

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(to_dict(_config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, tmp_path / "k.sqlite"))))
    out = tmp_path / "killed"
    fake_openai.answered.clear()
    proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "run", str(cfg_path), "--out", str(out)], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if moment == "generation":  # round 1's answer pass, request 11 of 16: some answers are cached, one is in flight
        def kill(number, body):
            if number == n_requests + 11:
                proc.send_signal(signal.SIGKILL)
                return True
        fake_openai.before_reply = kill
    else:
        deadline = time.time() + 240
        while not WHEN[moment](out) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=240)
    fake_openai.before_reply = None
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / "metrics.jsonl").exists() or 1 not in [json.loads(x)["round"] for x in (out / "metrics.jsonl").read_text().splitlines()], \
        "the kill must land before round 1 was logged"

    answered_before = {_key(b) for b in fake_openai.answered}
    asked_after_start = len(fake_openai.requests)
    done = subprocess.run([sys.executable, "-m", "loop.cli", "resume", str(out)], env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    repeated = [b for b in fake_openai.requests[asked_after_start:] if _key(b) in answered_before]
    assert not repeated, f"{len(repeated)} answered requests were sent again after resume"
    assert _rows(out) == expected
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2]
    ref_metrics = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    for m, e in zip(metrics, ref_metrics):  # same data, same ledger: the resumed run counts its calls once
        assert (m["n_kept"], m["rejected"], m["run_teacher_requests"]) == (e["n_kept"], e["rejected"], e["run_teacher_requests"])


def test_resume_refuses_a_finished_or_foreign_folder(tmp_path, tiny_corpus, fake_openai, tiny_model):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume(tmp_path)
    out = tmp_path / "done"
    cfg = _config(tmp_path, tiny_corpus, fake_openai.base_url, tiny_model, tmp_path / "c.sqlite")
    history = run(cfg, out)
    n = len(fake_openai.requests)
    assert resume(out) == history and len(fake_openai.requests) == n
    with pytest.raises(FileExistsError, match="daig resume"):
        run(cfg, out)
    # While another process holds the folder (a run still going), a second run or resume is refused, naming its pid;
    # the lock is the OS's, so once the holder is gone (or killed) the folder is free again.
    import fcntl
    from loop.controller import RunLocked
    with open(out / ".lock", "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.truncate(0)
        holder.write("4242")
        holder.flush()
        for attempt in (lambda: resume(out), lambda: run(cfg, out)):
            with pytest.raises(RunLocked, match=r"in use by another daig process \(pid 4242\)"):
                attempt()
    assert resume(out) == history and len(fake_openai.requests) == n
