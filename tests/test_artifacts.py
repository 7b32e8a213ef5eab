"""Training-side extras: data mixing across rounds, the QLoRA hardware guard, adapter cards, export."""
import json
import random
import subprocess
import sys

import pytest
import torch

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
