"""Training-side extras: data mixing across rounds, the QLoRA hardware guard, adapter cards, export."""
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import FAKE_TOKEN, HubServerProcess
from huggingface_hub import ModelCard

from training.artifacts import data_hash, write_adapter_card
from training.config import TrainConfig
from training.sft import check_hardware, mix_rows, train_adapter

ROWS = [{"prompt": [{"role": "user", "content": f"Question {i}?"}], "completion": [{"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(12)]


def test_data_mix_choices():
    rounds = [ROWS[:4], ROWS[4:8], ROWS[8:]]
    rng = random.Random(0)
    assert mix_rows(rounds, TrainConfig(), continuing=False, rng=rng) == ROWS  # auto + restart = all
    assert mix_rows(rounds, TrainConfig(), continuing=True, rng=rng) == ROWS[8:]  # auto + continue = new
    assert mix_rows(rounds, TrainConfig(data_mix="new"), continuing=False, rng=rng) == ROWS[8:]
    mixed = mix_rows(rounds, TrainConfig(data_mix="0.25"), continuing=True, rng=rng)
    assert mixed[-4:] == ROWS[8:] and len(mixed) == 6 and all(r in ROWS[:8] for r in mixed[:2])
    with pytest.raises(ValueError, match="data_mix: 'most'"):
        TrainConfig(data_mix="most")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the guard is for machines without CUDA")
def test_qlora_without_cuda_fails_at_start_with_one_line(tmp_path, tiny_corpus):
    with pytest.raises(ValueError, match="load_in_4bit.*needs a CUDA GPU.*load_in_4bit=false"):
        check_hardware(TrainConfig(load_in_4bit=True))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"generation:\n  domain_path: {tiny_corpus}\ntraining:\n  load_in_4bit: true\n")
    from conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "loop.cli", "run", str(cfg), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("config error: training.load_in_4bit")


def test_card_and_hash(tmp_path):
    assert data_hash(ROWS) == data_hash(list(ROWS)) != data_hash(ROWS[::-1])
    write_adapter_card(tmp_path, {"base_model": "tiny", "round": 2, "rows": 12, "data_sha256": data_hash(ROWS),
                                  "train": {"lora_r": 8, "steps": 3}, "metrics": {"task_eval_loss": {"qa": 1.5, "x": None}, "eval_loss": 1.5}})
    card = (tmp_path / "README.md").read_text()
    assert "base_model: tiny" in card and "| qa | 1.5000 |" in card and data_hash(ROWS) in card
    assert json.loads((tmp_path / "daig_adapter.json").read_text())["round"] == 2


def test_export_copy_merge_and_hub_upload(tmp_path, tiny_model):
    import yaml
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loop.export import export, find_adapter, hub_operations

    run = tmp_path / "run"
    adapter = run / "rounds" / "1" / "adapter"
    train_adapter(tiny_model, ROWS, adapter, TrainConfig(max_steps=3, learning_rate=5e-3), seed=0, num_threads=1)
    (run / "config.yaml").write_text(yaml.safe_dump({"student": tiny_model, "cache_dir": str(tmp_path / "cache")}))
    assert find_adapter(run, None) == adapter
    with pytest.raises(FileNotFoundError, match="no adapter for round 5"):
        find_adapter(run, 5)

    copied = export(run, tmp_path / "copy")
    assert (copied / "adapter_model.safetensors").exists()
    merged_dir = export(run, tmp_path / "merged", merge=True)
    assert not (merged_dir / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(merged_dir)
    x = tok("Question 3?", return_tensors="pt")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(**x).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(adapter))(**x).logits
    assert torch.allclose(merged, peft, atol=1e-4)
    with pytest.raises(FileExistsError):
        export(run, tmp_path / "copy")

    ops = hub_operations(copied)
    assert {o.path_in_repo for o in ops} >= {"adapter_model.safetensors", "adapter_config.json"}
    # a local student has no Hub id: the export names no base rather than this machine's path
    assert json.loads((copied / "adapter_config.json").read_text())["base_model_name_or_path"] is None
    assert "base_model" not in ModelCard.load(copied / "README.md").data.to_dict()


def test_packaged_models_name_their_upstream_hub_ids(tmp_path):
    from loop.models import EMBEDDING_MODELS, PACKAGED, hub_id

    assert hub_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("qwen2.5-coder-1.5b-instruct") == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+", m.hub_id) for m in (*PACKAGED.values(), *EMBEDDING_MODELS.values()))
    assert hub_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # a Hub id is its own
    assert hub_id(str(tmp_path)) is None and hub_id("my-model.Q4_K_M.gguf") is None  # local things have none


HUB_BASE = "daig-tests/tiny-chat"  # the Hub id the tiny packaged model stands for in these tests
TINY_PACKAGED = {"parts": (), "sha256": "ab" * 32, "licence": "Apache-2.0", "note": "tiny-chat Q4_0", "hub_id": HUB_BASE}
# the same entry in a `daig` subprocess, run before its CLI (a monkeypatch here does not reach another interpreter)
REGISTER_TINY = f"from loop import models\nmodels.PACKAGED['tiny-packaged'] = models.PackagedModel(**{TINY_PACKAGED!r})"


@pytest.fixture
def packaged_tiny(tmp_path, tiny_model, monkeypatch) -> Path:
    """The tiny model as a packaged model, converted already: what resolve_model leaves in <cache>/models (no GGUF step)."""
    from loop import models

    entry = models.PackagedModel(**TINY_PACKAGED)
    monkeypatch.setitem(models.PACKAGED, "tiny-packaged", entry)
    converted = tmp_path / "cache" / "models" / f"tiny-packaged-{entry.sha256[:12]}"
    shutil.copytree(tiny_model, converted)
    (converted / "daig_converted.json").write_text(json.dumps({"source": "tiny-packaged"}))
    return tmp_path / "cache"


def hub_cache(cache: Path, repo_id: str, folder: str | Path) -> None:
    """Lay `folder` out as huggingface_hub's cache lays out a downloaded repo (refs/main naming one snapshot), so
    from_pretrained(repo_id) finds it with HF_HUB_OFFLINE=1."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))


def run_card_snippet(card_text: str, cache: Path, cwd: Path) -> str:
    """The card's python block, as written, in a fresh interpreter offline, the Hub ids it names served by `cache`."""
    snippet = re.search(r"```python\n(.*?)```", card_text, re.S).group(1)
    cwd.mkdir(exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return snippet


def local_paths(folder: Path, roots: list[str]) -> list[str]:
    """The files of folder that mention any of roots (this machine's paths)."""
    return [f.name for f in folder.rglob("*") if f.is_file() and any(r.encode() in f.read_bytes() for r in roots)]


def pushed_files(hub: HubServerProcess, repo_id: str) -> dict[str, str]:
    """What the Hub received for repo_id: {path: sha256} of its one commit."""
    commits = [r for r in hub.requests() if "/commit/" in r["path"] and r["repo_id"] == repo_id]
    assert len(commits) == 1 and commits[0]["status"] == 200, commits
    return {f["path"]: f["sha256"] for f in commits[0]["files"]}


def sha256s(folder: Path) -> dict[str, str]:
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.rglob("*") if f.is_file()}


def test_exported_cards_name_the_hub_id_and_their_snippets_run(tmp_path, tmp_path_factory, packaged_tiny, tiny_model):
    """The card shows the Hub ids; the test serves those ids from a local HF cache holding the tiny model (as the base)
    and the exports (as the pushed repos), and runs each card's snippet unchanged with HF_HUB_OFFLINE=1. The pushes go
    from a real `daig` process to the loopback Hub (tests/hub_server.py), which records what arrived."""
    import yaml

    from loop.models import resolve_model

    run = tmp_path / "run"
    adapter = run / "rounds" / "1" / "adapter"
    base = resolve_model("tiny-packaged", packaged_tiny)
    train_adapter(base, ROWS, adapter, TrainConfig(max_steps=2, learning_rate=5e-3), seed=0, num_threads=1)
    write_adapter_card(adapter, {"base_model": "tiny-packaged", "round": 1, "rows": len(ROWS), "data_sha256": data_hash(ROWS),
                                 "train": {"lora_r": 8, "include_context": False}, "metrics": {}})  # as the controller does
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == base  # peft's local path
    (run / "config.yaml").write_text(yaml.safe_dump({"student": "tiny-packaged", "cache_dir": str(packaged_tiny)}))
    hub = tmp_path / "hub"
    hub_cache(hub, HUB_BASE, tiny_model)
    here = [str(tmp_path_factory.getbasetemp()), tiny_model, base]

    with HubServerProcess(tmp_path) as server:
        done = server.daig("export", str(run), "--out", str(tmp_path / "adapter"), "--push-to-hub", "me/tiny-adapter", prelude=REGISTER_TINY)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "pushed (private repo me/tiny-adapter)" in done.stdout
        out = tmp_path / "adapter"
        assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_BASE
        assert local_paths(out, here) == [] and not (out / "training_args.bin").exists()
        card = ModelCard.load(out / "README.md")
        assert card.data.base_model == HUB_BASE and card.data.library_name == "peft" and "dequantized" in card.text
        snippet = run_card_snippet(card.text, hub_with(hub, "me/tiny-adapter", out), tmp_path / "elsewhere")
        assert f'"{HUB_BASE}"' in snippet and '"me/tiny-adapter"' in snippet
        created = [r for r in server.requests() if r["path"] == "/api/repos/create"]
        assert [(r["repo_id"], r["repo_type"], r["private"]) for r in created] == [("me/tiny-adapter", "model", True)]
        received = pushed_files(server, "me/tiny-adapter")
        assert "adapter_model.safetensors" in received and received == sha256s(out)  # every exported byte, and only those

        done = server.daig("export", str(run), "--out", str(tmp_path / "merged"), "--merge", "--push-to-hub", "me/tiny-merged",
                           "--public", prelude=REGISTER_TINY)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "pushed (public repo me/tiny-merged)" in done.stdout
        merged = tmp_path / "merged"
        card = ModelCard.load(merged / "README.md")
        meta = card.data.to_dict()
        assert meta["base_model"] == HUB_BASE and meta["base_model_relation"] == "finetune" and meta["library_name"] == "transformers"
        assert "peft" not in meta.values() and "merged" in card.text and not (merged / "adapter_config.json").exists()
        assert local_paths(merged, here) == []
        run_card_snippet(card.text, hub_with(hub, "me/tiny-merged", merged), tmp_path / "elsewhere")
        created = [r for r in server.requests() if r["path"] == "/api/repos/create"]
        assert [(r["repo_id"], r["repo_type"], r["private"]) for r in created][1:] == [("me/tiny-merged", "model", False)]
        assert pushed_files(server, "me/tiny-merged") == sha256s(merged)
        log = server.requests()
    assert all(r["status"] == 200 and r["token"] == FAKE_TOKEN for r in log), log  # every call known to the test Hub, authenticated
    assert local_paths(out, [FAKE_TOKEN]) == local_paths(merged, [FAKE_TOKEN]) == []  # the token sent is never written


def hub_with(cache: Path, repo_id: str, folder: Path) -> Path:
    hub_cache(cache, repo_id, folder)
    return cache


def test_export_errors_are_one_line(tmp_path, capsys):
    from loop.cli import main

    (tmp_path / "run" / "rounds" / "1").mkdir(parents=True)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no rounds/<r>/adapter" in err and "\n" not in err
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "o"), "--push-to-hub", "bad id!"]) == 2
    assert "USER/NAME" in capsys.readouterr().err and not (tmp_path / "o").exists()
