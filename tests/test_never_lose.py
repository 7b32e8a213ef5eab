"""Issue 13: never lose data or money. Every count is taken at a loopback OpenAI-protocol server running in its own
process (tests/openai_server.py ServerProcess), never from our own ledger; kills are real SIGKILLs of `daig`."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loop.config import load_config, to_dict
from openai_server import ServerProcess, read_log

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


def overrides(corpus, base_url, model, cache, *extra) -> list[str]:
    return [f"generation.domain_path={corpus}", "generation.teacher.backend=openai", f"generation.teacher.base_url={base_url}",
            "generation.teacher.model=fake-teacher", "generation.teacher.api_key_env=", "generation.teacher.max_concurrency=2",
            "generation.daig.examples_per_round=8", "generation.novelty.filter=none", f"student={model}", "rounds=2", "num_threads=1",
            "training.max_steps=2", "eval.generation_samples=2", "eval.max_new_tokens=4", "tracking.wandb=false",
            "eval.rolling_heldout=true", "eval.validation_per_task=0", "eval.test_per_task=0", f"generation.teacher.cache_path={cache}",
            "generation.teacher.backoff_s=0.05", "generation.teacher.max_backoff_s=0.2", *extra]


def write_config(path: Path, *args) -> Path:
    path.write_text(yaml.safe_dump(to_dict(load_config(None, overrides(*args)))))
    return path


def daig(*args, timeout=300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loop.cli", *map(str, args)], env=env or ENV, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    text = proc.stderr.strip().splitlines()
    error = "\n".join(text[next(i for i, x in enumerate(text) if x.startswith("error: ")):])
    for needle in needles:
        assert needle in error, error
    return error


def rows(out: Path, rounds=(1, 2)) -> list[str]:
    return [(out / "rounds" / str(r) / name).read_text() for r in rounds for name in ("data.jsonl", "rejected.jsonl")]


@pytest.fixture
def server(tmp_path):
    s = ServerProcess(tmp_path)
    yield s
    s.stop()


# ---- preflight: every problem before any paid call, all at once, nothing left behind --------------------------------

def test_a_bad_student_and_a_missing_corpus_are_both_reported_before_any_call(tmp_path, tiny_corpus, tiny_model, server):
    cfg = write_config(tmp_path / "c.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "c.sqlite")
    out = tmp_path / "out"
    proc = daig("run", cfg, "--out", out, "student=no-such-org/no-such-model-xyz", "generation.domain_path=/nonexistent/docs")
    assert proc.returncode == 2
    error = one_line_error(proc, "2 problems, nothing was paid", "student='no-such-org/no-such-model-xyz' does not load", "/nonexistent/docs")
    assert "--debug" in error
    assert server.events("received") == [], "nothing may reach the teacher before the checks pass"
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left in ([], [".lock"]), f"a failed start must leave no config or checkpoint to resume from: {left}"
    # the same command with the student fixed starts normally in the same folder (nothing to resume, nothing refused)
    debug = daig("run", cfg, "--out", out, "student=no-such-org/no-such-model-xyz", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "PreflightError" in debug.stderr


@pytest.mark.parametrize("case", ["out_is_a_file", "out_read_only", "cache_read_only"])
def test_unwritable_places_are_one_line_naming_the_fix(case, tmp_path, tiny_corpus, tiny_model, server):
    # /sys refuses writes to root and users alike, so these hold however the tests are run
    out, cache = tmp_path / "out", tmp_path / "c.sqlite"
    if case == "out_is_a_file":
        out.write_text("not a folder")
    elif case == "out_read_only":
        out = Path("/sys/daig-test/out")
    else:
        cache = Path("/sys/daig-test/cache.sqlite")
    cfg = write_config(tmp_path / "c.yaml", tiny_corpus, server.base_url, tiny_model, cache)
    proc = daig("run", cfg, "--out", out)
    assert proc.returncode == 2
    needle = {"out_is_a_file": "is a file; give a folder path", "out_read_only": "is not writable",
              "cache_read_only": "generation.teacher.cache_path"}[case]
    one_line_error(proc, needle)
    assert server.events("received") == []


def _finished_run(tmp_path, tiny_corpus, tiny_model, base_url, rounds=1) -> Path:
    cfg = write_config(tmp_path / "c.yaml", tiny_corpus, base_url, tiny_model, tmp_path / "c.sqlite", f"rounds={rounds}")
    out = tmp_path / "run"
    proc = daig("run", cfg, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_checkpoint_is_small_json_damage_is_one_line_and_a_pickle_needs_the_flag(tmp_path, tiny_corpus, tiny_model, server):
    out = _finished_run(tmp_path, tiny_corpus, tiny_model, server.base_url)
    saved = json.loads((out / "checkpoint.json").read_text())
    assert saved["version"] == 1 and saved["round"] == 2 and "Hold the Mode button" not in (out / "checkpoint.json").read_text(), \
        "the checkpoint references the corpus and the rows, it does not copy them"
    good = (out / "checkpoint.json").read_bytes()

    for damage in (good[: len(good) // 2], b""):  # truncated, empty
        (out / "checkpoint.json").write_bytes(damage)
        one_line_error(daig("resume", out), "checkpoint.json is damaged", "start a new run with another --out")

    # An older version's pickle resumes only behind --allow-pickle: without it nothing in the file runs.
    (out / "checkpoint.json").unlink()
    marker = tmp_path / "code-ran"
    (out / "checkpoint.pkl").write_bytes(pickle.dumps(_RunsCode(str(marker))))
    one_line_error(daig("resume", out), "--allow-pickle", "runs any code")
    assert not marker.exists()
    (out / "checkpoint.pkl").write_bytes(b"\x80\x04garbage")
    one_line_error(daig("resume", "--allow-pickle", out), "checkpoint.pkl is damaged")


class _RunsCode:
    """A pickle whose loading creates a file: what a hostile shared run folder could hold."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_older_pickled_checkpoint_resumes_with_the_flag_to_the_same_rows(tmp_path, tiny_corpus, tiny_model, server):
    (tmp_path / "ref").mkdir()
    ref = _finished_run(tmp_path / "ref", tiny_corpus, tiny_model, server.base_url, rounds=2)
    out = _finished_run(tmp_path, tiny_corpus, tiny_model, server.base_url, rounds=1)
    # Rebuild the in-memory state the way the older version pickled it, then extend the run to 2 rounds.
    from generation.data.corpus import load_corpus
    from generation.data.pool import build_pool, load_pool
    from loop.runfolder import read_checkpoint, state_from_json
    from loop.config import RunConfig, build
    from loop.methods import start_method

    cfg = build(RunConfig, yaml.safe_load((out / "config.yaml").read_text()))
    g = cfg.generation
    pool = build_pool(load_pool(g.general_pool, "general"), load_pool(g.domain_pool, "domain"), g.tasks)
    method = start_method(g, pool, load_corpus(g.domain_path, g.chunk_words), cfg.cache_dir, 1)
    st = state_from_json(read_checkpoint(out), out, method)
    for old in (st, st.ledger, st.round_ledger_start, st.judge_ledger, st.method):  # fields that version did not have
        for name in ("retry_reasons", "unconfirmed", "novelty_base", "chunk_requests", "judge_ledger"):
            old.__dict__.pop(name, None)
    (out / "checkpoint.pkl").write_bytes(pickle.dumps(st))
    (out / "checkpoint.json").unlink()
    (out / "teacher_calls.jsonl").unlink()  # nor journals: its checkpointed ledger (16 calls) must carry over
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace("rounds: 1", "rounds: 2"))
    (out / ".checkpoint.json.abcd1234").write_text("a kill mid-write left this")
    proc = daig("resume", "--allow-pickle", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows(out) == rows(ref)
    assert (out / "checkpoint.json").exists() and not (out / ".checkpoint.json.abcd1234").exists()
    assert [json.loads(x)["run_teacher_calls"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [16, 32]


def test_checkpoint_size_does_not_grow_with_the_corpus(tmp_path):
    """Rows and chunks are referenced: a corpus 10x larger leaves the checkpoint the same size."""
    from generation.data.corpus import load_corpus
    from generation.data.pool import build_pool, load_pool
    from loop.runfolder import LoopState, save_checkpoint
    from loop.config import load_config as load
    from loop.methods import start_method

    sizes = []
    for n in (50, 500):
        docs = tmp_path / f"docs{n}"
        docs.mkdir()
        for i in range(n):
            (docs / f"d{i}.md").write_text(f"# Page {i}\n\n" + " ".join(f"word{i}x{j}" for j in range(2000)) + "\n")
        g = load(None, [f"generation.domain_path={docs}"]).generation
        pool = build_pool(load_pool(g.general_pool, "general"), load_pool(g.domain_pool, "domain"), g.tasks)
        st = LoopState(method=start_method(g, pool, load_corpus(str(docs), g.chunk_words), "", 1))
        out = tmp_path / f"out{n}"
        out.mkdir()
        save_checkpoint(out, st)
        sizes.append((out / "checkpoint.json").stat().st_size)
    assert sizes[0] == sizes[1] < 100_000, sizes


# ---- the ledger and the caps across kills ----------------------------------------------------------------------------

def journal_sends(out: Path) -> int:
    """Every attempt the run says it sent, from its durable journal (teacher_calls.jsonl)."""
    return sum(1 for e in read_log(out / "teacher_calls.jsonl") if e["e"] == "sent")


def kill_when(cmd: list, until, deadline_s: float = 120) -> bool:
    """Start `daig cmd`, SIGKILL it once until() is true; False when it ended on its own first."""
    proc = subprocess.Popen([sys.executable, "-m", "loop.cli", *map(str, cmd)], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + deadline_s
    while proc.poll() is None and not until(proc) and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def test_the_call_cap_holds_across_random_kills(tmp_path, tiny_corpus, tiny_model):
    import random

    server = ServerProcess(tmp_path, latency_s=0.05)
    try:
        cap = 20
        cfg = write_config(tmp_path / "c.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "c.sqlite", "rounds=3",
                           f"generation.teacher.max_teacher_calls={cap}")
        out, rng, kills = tmp_path / "run", random.Random(7), 0
        for attempt in range(4):  # kill after a random number of further requests reach the server
            target = len(server.events("received")) + rng.randint(2, 7)
            cmd = ["run", cfg, "--out", out] if attempt == 0 else ["resume", out]
            if not kill_when(cmd, lambda proc: len(server.events("received")) >= target):
                break
            kills += 1
        done = daig("resume", out)
        assert done.returncode == 0, done.stderr[-3000:]
        received = server.events("received")
        assert kills >= 3 and len(received) <= cap, f"the server got {len(received)} requests for a cap of {cap}, over {kills} kills"
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["budget_exhausted"] == "max_teacher_calls"
        # the ledger counts every call any attempt sent: at least what the server got, at most that plus those in flight
        assert len(received) <= last["run_teacher_calls"] == journal_sends(out) <= len(received) + 2 * kills
    finally:
        server.stop()


def test_two_processes_sharing_a_cache_pay_once(tmp_path, tiny_corpus, tiny_model):
    server = ServerProcess(tmp_path, latency_s=0.1)
    try:
        outs = [tmp_path / "a", tmp_path / "b"]
        cfg = write_config(tmp_path / "c.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "shared.sqlite", "rounds=1")
        procs = [subprocess.Popen([sys.executable, "-m", "loop.cli", "run", str(cfg), "--out", str(o)], env=ENV, cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for o in outs]
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
        keys = [e["key"] for e in server.events("received")]
        assert len(keys) == len(set(keys)) == 16, f"{len(keys) - len(set(keys))} duplicate paid requests"
        assert rows(outs[0], (1,)) == rows(outs[1], (1,))
        calls = [json.loads((o / "metrics.jsonl").read_text())["run_teacher_calls"] for o in outs]
        assert sum(calls) == 16, f"each call is paid by exactly one of the two runs: {calls}"
    finally:
        server.stop()


# ---- endpoint health: a dead endpoint stops the run, nothing is lost, resume continues ------------------------------

def test_a_dead_endpoint_stops_with_exit_3_and_resume_continues(tmp_path, tiny_corpus, tiny_model):
    server = ServerProcess(tmp_path, latency_s=0.05)
    try:
        extra = ("generation.teacher.outage_failures=3", "generation.teacher.outage_wait_s=1.5", "generation.teacher.max_retries=1")
        (tmp_path / "ref").mkdir()
        ref_cfg = write_config(tmp_path / "ref" / "c.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "ref.sqlite", *extra)
        assert daig("run", ref_cfg, "--out", tmp_path / "ref" / "run").returncode == 0
        before = len(server.events("answered"))
        cfg = write_config(tmp_path / "c.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "c.sqlite", *extra)
        out = tmp_path / "run"
        proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "run", str(cfg), "--out", str(out)], env=ENV, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while len(server.events("answered")) < before + 11 and time.time() < deadline:  # round 1's answers, midway
            time.sleep(0.01)
        port = server.port
        server.stop()  # the endpoint dies mid-round
        assert proc.wait(timeout=120) == 3
        err = proc.stderr.read()
        assert "Traceback" not in err and "daig resume" in err.strip().splitlines()[-1], err[-2000:]
        assert not (out / "metrics.jsonl").exists(), "a round the transport cut short is not a finished round"
        answered_before = {e["key"] for e in server.events("answered")[before:]}
        still_down = daig("resume", out)  # a script that retries on exit 3 may find it still down: exit 3 again
        assert still_down.returncode == 3 and "cannot reach the teacher endpoint" in still_down.stderr

        server = ServerProcess(tmp_path, latency_s=0.05, port=port)  # back, same address
        seen = len(server.events("received"))
        done = daig("resume", out)
        assert done.returncode == 0, done.stderr[-3000:]
        assert rows(out) == rows(tmp_path / "ref" / "run")
        again = [e for e in server.events("received")[seen:] if e["key"] in answered_before]
        assert not again, f"{len(again)} requests answered before the outage were paid again"
    finally:
        server.stop()


def test_a_server_that_only_times_out_is_an_error_not_an_empty_round(tmp_path, tiny_corpus, tiny_model):
    server = ServerProcess(tmp_path, latency_s=3.0)
    try:
        cfg = write_config(tmp_path / "c.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "c.sqlite", "generation.teacher.timeout_s=0.3",
                           "generation.teacher.max_retries=1", "generation.teacher.outage_failures=2", "generation.teacher.outage_wait_s=1")
        proc = daig("run", cfg, "--out", tmp_path / "run", timeout=120)
        assert proc.returncode == 3, proc.stderr[-2000:]
        one_line_error(proc, "daig resume")
        assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "rounds" / "1" / "data.jsonl").exists()
    finally:
        server.stop()


# ---- soak: 20 random kills over a 3-round run against a server that fails 5% of requests ---------------------------

def test_soak_twenty_random_kills_with_injected_faults(tmp_path, tiny_corpus, tiny_model):
    """Kills land anywhere (start-up, generation, training, eval, checkpoint writes). The end must be the
    uninterrupted run's data byte for byte; a request is paid twice only when its first reply reached the server's
    socket in the moment before a kill; the journal's attempts equal what the server received, give or take what
    was in flight at each kill."""
    import collections
    import random

    server = ServerProcess(tmp_path, fault_rate=0.05, latency_s=0.05, seed=3)
    try:
        rounds = (1, 2, 3)
        (tmp_path / "ref").mkdir()
        ref_cfg = write_config(tmp_path / "ref" / "c.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "ref.sqlite", "rounds=3",
                               "generation.daig.examples_per_round=48")
        began = time.time()
        assert daig("run", ref_cfg, "--out", tmp_path / "ref" / "run").returncode == 0
        took = time.time() - began  # the kill windows scale with it, so a faster machine gets as many kills in
        start = len(read_log(server.log))
        cfg = write_config(tmp_path / "c.yaml", tiny_corpus, server.base_url, tiny_model, tmp_path / "c.sqlite", "rounds=3",
                           "generation.daig.examples_per_round=48")
        out, rng, kill_times, states = tmp_path / "run", random.Random(20261206), [], set()

        def working_for(seconds: float):  # true once the process has held the run folder's lock this long
            since = []

            def until(proc) -> bool:
                lock = out / ".lock"
                if not since and lock.exists() and lock.read_text().strip() == str(proc.pid):
                    since.append(time.time())
                return bool(since) and time.time() - since[0] >= seconds
            return until

        for _ in range(20):  # half the kills after a few more requests reach the server, half at a random moment of the work
            cmd = ["resume", out] if (out / "checkpoint.json").exists() else ["run", cfg, "--out", out]
            if rng.random() < 0.5:
                target = len(server.events("received")) + rng.randint(1, 8)
                until = lambda proc: len(server.events("received")) >= target  # noqa: E731
            else:
                until = working_for(took * rng.uniform(0.035, 0.28))
            if not kill_when(cmd, until):
                break  # it finished first
            kill_times.append(time.time())
            if (out / "checkpoint.json").exists():
                saved = json.loads((out / "checkpoint.json").read_text())
                states.add((saved["round"], saved["stage"]))
        done = daig("resume", out)
        assert done.returncode == 0, done.stderr[-3000:]
        print(f"soak: uninterrupted {took:.1f} s; {len(kill_times)} kills after these stages: {sorted(states)}")
        assert len(kill_times) == 20 and len(states) >= 4, (len(kill_times), sorted(states), took)
        assert rows(out, rounds) == rows(tmp_path / "ref" / "run", rounds)
        assert [json.loads(x)["round"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

        events = read_log(server.log)[start:]
        answered = collections.defaultdict(list)
        for e in events:
            if e["e"] == "answered":
                answered[e["key"]].append(e["t"])
        repaid = [t for times in answered.values() for t in times[:-1]]
        stray = [t for t in repaid if not any(0 <= k - t < 1.0 for k in kill_times)]
        assert not stray, f"{len(stray)} requests were paid twice without a kill in flight"
        assert len(repaid) <= 2 * len(kill_times)
        received = sum(e["e"] == "received" for e in events)
        assert sum(e["fault"] != "" for e in events if e["e"] == "received") > 0, "the faults must have been exercised"
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        sends = journal_sends(out)
        assert received <= sends <= received + 2 * len(kill_times), (received, sends, len(kill_times))
        assert last["run_teacher_calls"] + last["run_teacher_retries"] == sends
    finally:
        server.stop()


TRACKER_STEP = """
import json, sys
from pathlib import Path
from loop.config import TrackingConfig
from loop.tracking import Tracker, append_jsonl
out, step, run_id = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
metrics = [{"round": r, "task_weights": {"qa": 1.0}, "task_eval_loss": {"qa": 3.0 - r}, "next_task_weights": {"qa": 1.0},
            "eval_loss": 3.0 - r, "n_kept": 1, "adapter": None} for r in (1, 2)]
t = Tracker(TrackingConfig(wandb=True, mode="offline", project="daig-test"), out, {}, run_id)
if step == "first":
    t.log_round(metrics[0], [], [], [], [("data", "dataset", out / "rounds" / "1" / "data.jsonl")])
    append_jsonl(out / "metrics.jsonl", metrics[1])  # ... and here the process died
    print(json.dumps(t.run.id))
elif step == "again":
    caught = [t.catch_up(out), t.catch_up(out)]
    t.log_round(metrics[1], [], [], [], [])  # the resumed loop finishing round 2 again logs nothing twice
    print(json.dumps(caught))
else:
    print(json.dumps([t.catch_up(out, recorded=False), t.catch_up(out)]))
t.finish()
"""


def test_a_round_a_kill_kept_from_wandb_is_logged_on_resume(tmp_path):
    """The kill lands after round 2's metrics line and before W&B got it: the resumed run's tracker logs it, once.
    Each tracker runs in its own process, as a killed run and its resume do (one process re-opening a W&B run id it
    has just finished races W&B's own service: the new stream can lose its records)."""
    out = tmp_path / "run"
    for r in (1, 2):
        (out / "rounds" / str(r)).mkdir(parents=True)
        (out / "rounds" / str(r) / "data.jsonl").write_text(json.dumps({"id": f"r{r}-00000", "round": r}) + "\n")

    def step(name, run_id=""):
        proc = subprocess.run([sys.executable, "-c", TRACKER_STEP, str(out), name, run_id], env={**ENV, "WANDB_MODE": "offline"},
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    run_id = step("first")
    assert step("again", run_id) == [[2], []]
    assert [json.loads(x)["round"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert [json.loads(x)["round"] for x in (out / "wandb_rounds.jsonl").read_text().splitlines()] == [1, 2]
    logged = b"".join(f.read_bytes() for f in (out / "wandb").glob(f"offline-run-*{run_id}*/run-{run_id}.wandb"))
    assert f"data-{run_id}".encode() in logged and b"round-1" in logged and b"round-2" in logged  # one artifact, a version a round
    # a run folder from before the record existed: its rounds count as logged, nothing is sent again
    (out / "wandb_rounds.jsonl").unlink()
    assert step("older", run_id) == [[], []]


def test_the_checkpoint_restores_evolved_and_same_id_pool_items(tmp_path):
    """Evol-Instruct grows the pool with items no file holds; two pools may use the same ids."""
    from generation.data.pool import EvolvedItem, PoolItem
    from generation.methods import dynosaur, evol
    from loop.runfolder import LoopState, read_checkpoint, save_checkpoint, state_from_json

    def start():
        return evol.State(pool={"qa": [PoolItem("1", "qa", "general one", "", "", "general"), PoolItem("1", "qa", "domain one", "", "", "domain")],
                                "sum": [PoolItem("2", "sum", "summarize", "", "", "general")]})

    st = LoopState(method=start(), rng=__import__("random").Random(3).getstate())
    st.method.pool["qa"] = [st.method.pool["qa"][1], EvolvedItem("r1-00002", "qa", "harder one", "", "ans", "general", depth=2)]
    save_checkpoint(tmp_path, st)
    back = state_from_json(read_checkpoint(tmp_path), tmp_path, start())
    assert back.method.pool == st.method.pool and type(back.method.pool["qa"][1]) is EvolvedItem
    assert back.method.pool["qa"][0].instruction == "domain one" and back.rng == st.rng
    # Dynosaur's proposed tasks are tuples holding tuples; JSON gives lists back
    seen = dynosaur.State(meta=None, seen={("task a", ("x",), ("y",))})
    again = dynosaur.State(meta=None)
    again.restore(json.loads(json.dumps(seen.to_json())))
    assert again.seen == seen.seen


def test_a_journal_line_torn_by_a_kill_does_not_swallow_the_next(tmp_path):
    from generation.teacher.cache import Journal, Ledger

    path = tmp_path / "teacher_calls.jsonl"
    j = Journal(path)
    j.base("generation", Ledger(calls=5, prompt_tokens=50))
    j.sent("generation", "k1", 1, 100, 0.0)
    j.close()
    with open(path, "a") as f:
        f.write('{"e":"sent","t":"generation","k":"k2","a":1,')  # the kill landed mid-line
    j = Journal(path)
    j.sent("generation", "k3", 1, 100, 0.0)
    j.close()
    led = Journal.replay(path, "generation")
    assert (led.calls, led.unconfirmed, led.prompt_tokens, led.unconfirmed_tokens) == (7, 2, 50, 200)
