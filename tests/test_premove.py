"""Run folders written before generation/ was split into methods/, teacher/, filters/ and data/ still resume.

tests/fixtures/premove/ holds one finished 1-round run per method, written by commit 38fbcd3 (the last one before the
move) with the packaged teacher; see its README. Each is resumed for a second round against the loopback server,
with the tiny student (the fixtures ship no adapter: round 2 trains a fresh one, adapter_mode restart).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from openai_server import ServerProcess

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "premove"
ENV = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


def unpack(name: str, tmp_path: Path, base_url: str, student: str) -> Path:
    out = tmp_path / name
    shutil.copytree(FIXTURES / name, out)
    for f in out.rglob("*"):
        if f.is_file() and f.suffix != ".pkl":
            f.write_text(f.read_text().replace("@OUT@", str(out)).replace("@REPO@", str(REPO))
                         .replace("@CACHE@", str(tmp_path / "cache.sqlite")))
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["rounds"], cfg["student"], cfg["num_threads"] = 2, student, 1  # as if killed after round 1 of 2
    cfg["generation"]["teacher"].update(backend="openai", base_url=base_url, model="fake-teacher", api_key_env="")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    return out


@pytest.mark.parametrize("name", ["daig", "self_instruct", "alpaca", "evol_instruct", "dynosaur", "daig_pickle"])
def test_a_run_folder_from_before_the_move_resumes(name, tmp_path, tiny_model):
    import os

    server = ServerProcess(tmp_path)
    try:
        out = unpack(name, tmp_path, server.base_url, tiny_model)
        before = json.loads((out / "checkpoint.json").read_text())["method"] if name != "daig_pickle" else None
        round1 = (out / "rounds" / "1" / "data.jsonl").read_text()
        flags = ["--allow-pickle"] if name.endswith("pickle") else []
        proc = subprocess.run([sys.executable, "-m", "loop.cli", "resume", *flags, str(out)], cwd=REPO, capture_output=True,
                              text=True, timeout=600, env={**os.environ, **ENV})
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2]
    assert (out / "rounds" / "1" / "data.jsonl").read_text() == round1, "round 1's rows are kept as they were"
    assert (out / "rounds" / "2" / "data.jsonl").exists() and (out / "checkpoint.json").exists()
    assert metrics[1]["run_teacher_calls"] >= metrics[0]["run_teacher_calls"], "the earlier calls stay in the ledger"
    after = json.loads((out / "checkpoint.json").read_text())["method"]
    if before is not None:  # what the method carried out of round 1 is still there after round 2
        for key in ("novelty_added", "machine", "seen"):
            assert after.get(key, [])[:len(before.get(key, []))] == before.get(key, []), key
        for key, count in before.get("chunk_counts", {}).items():
            assert after["chunk_counts"][key] >= count
