"""The device policy (loop/device.py): on a machine without CUDA it picks the CPU in float32, asking for CUDA there
stops the run in one line, and every stage given the policy's values behaves exactly as before the policy existed."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eval.evaluate import load_student, sample_answers, task_losses
from generation.config import GenerationConfig
from generation.filters.embeddings import Embedder
from generation.teacher.backends import LocalTeacher, SeededSampler, TeacherRequest
from loop.config import ConfigError, RunConfig, load_config
from loop.device import attention, placement, resolve
from training.config import TrainConfig
from training.sft import train_adapter

REPO = Path(__file__).resolve().parents[1]
ROWS = [{"id": str(i), "task": "qa" if i % 2 else "summarization",
         "prompt": [{"role": "user", "content": f"Reset the controller {i}?"}],
         "completion": [{"role": "assistant", "content": "Hold the Mode button for ten seconds."}]} for i in range(8)]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the defaults resolve to the GPU here")


def cfg(**kw) -> RunConfig:
    return RunConfig(generation=GenerationConfig(domain_path="docs"), **kw)


def test_auto_is_cpu_float32_and_transformers_own_attention_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CUDA absence, simulated on a GPU machine too
    assert resolve("auto", "auto") == ("cpu", "float32")
    assert placement(cfg()) == {"device": "cpu", "dtype": "float32", "attn": ""}, "'': transformers picks (SDPA, or eager where unsupported)"


def test_auto_picks_cuda_and_half_precision_when_cuda_is_there(monkeypatch):
    # Simulated CUDA presence, for the pure policy function only: nothing is loaded on the pretend GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve("auto", "auto") == ("cuda", "bfloat16")
    assert resolve("cuda:1", "float32") == ("cuda:1", "float32")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve("auto", "auto") == ("cuda", "float16")
    with pytest.raises(ConfigError, match=r"^device: 'cuda:2' but this machine has 2 CUDA device\(s\); set device=auto or device=cpu$"):
        resolve("cuda:2", "auto")
    assert attention("cuda", "float32") == ""  # FlashAttention needs half precision


def test_cuda_asked_without_cuda_fails_at_start_in_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"generation": {"domain_path": str(tmp_path)}}))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU from torch: a real machine without CUDA
    proc = subprocess.run([sys.executable, "-m", "loop.cli", "run", str(p), "--out", str(tmp_path / "o"), "device=cuda"],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("config error: device: 'cuda' but this machine has no CUDA device "
                                   "(torch.cuda.is_available() is False); set device=auto or device=cpu")
    assert not (tmp_path / "o").exists()


def test_bad_values_are_reported_together_and_half_precision_on_the_cpu_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"generation.domain_path={tmp_path}", "device=gpu", "dtype=fp16"])
    assert e.value.problems == ["device: 'gpu' is not one of auto, cpu, cuda or cuda:N",
                                "dtype: 'fp16' is not one of auto, float32, bfloat16, float16"]
    assert load_config(None, [f"generation.domain_path={tmp_path}", "device=cuda:1"]).device == "cuda:1"
    for dtype in ("bfloat16", "float16"):
        with pytest.raises(ConfigError, match=f"^dtype: {dtype} on the CPU .*set dtype=float32 or dtype=auto"):
            resolve("cpu", dtype)
    with pytest.raises(ConfigError, match="training.load_in_4bit"):
        placement(cfg(device="cpu", training=TrainConfig(load_in_4bit=True)))


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@no_cuda
def test_training_is_the_same_under_the_policy(tiny_model, tmp_path):
    train = TrainConfig(max_steps=3, batch_size=4, learning_rate=5e-3, logging_steps=1)
    today = train_adapter(tiny_model, ROWS, tmp_path / "today", train, seed=0, num_threads=1)
    auto = train_adapter(tiny_model, ROWS, tmp_path / "auto", train, seed=0, num_threads=1, **placement(cfg()))
    cpu = train_adapter(tiny_model, ROWS, tmp_path / "cpu", train, seed=0, num_threads=1, **placement(cfg(device="cpu", dtype="float32")))
    assert today["steps"] == 3 and today["loss_history"][-1]["loss"] < today["loss_history"][0]["loss"], "real training steps"
    assert auto["loss_history"] == today["loss_history"] == cpu["loss_history"]
    weights = [adapter_tensors(tmp_path / d) for d in ("today", "auto", "cpu")]
    assert all(torch.equal(weights[0][k], w[k]) for w in weights[1:] for k in weights[0])
    saved = json.loads((tmp_path / "today" / "adapter_config.json").read_text())
    assert saved["r"] == 8


@no_cuda
def test_eval_loss_and_greedy_replies_are_the_same_under_the_policy(tiny_model):
    from transformers import AutoModelForCausalLM

    before = (AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval(), load_student(tiny_model, None, 1)[1])
    today = load_student(tiny_model, None, 1)
    cpu = load_student(tiny_model, None, 1, **placement(cfg(device="cpu", dtype="float32")))
    auto = load_student(tiny_model, None, 1, **placement(cfg()))
    loaded = (before, today, cpu, auto)  # before: the load eval made before the policy existed
    losses = [task_losses(m, tok, ROWS, 4, 512, desc="") for m, tok in loaded]
    assert all(x == losses[0] for x in losses) and all(v["tokens"] for v in losses[0].values())
    replies = [[s["student"] for s in sample_answers(m, tok, ROWS[:3], 6)] for m, tok in loaded]
    assert all(x == replies[0] for x in replies)


def test_the_seeded_sampler_on_the_cpu_draws_the_noise_it_always_drew():
    seeds, vocab = [3, 11], 50
    before = torch.stack([torch.rand(vocab, generator=torch.Generator().manual_seed(s)) for s in seeds]).clamp_min(1e-20)
    noise = SeededSampler(seeds, torch.device("cpu"))(None, torch.zeros(2, vocab))
    assert torch.equal(noise, -torch.log(-torch.log(before)))


@no_cuda
def test_local_teacher_replies_are_the_same_under_the_policy_alone_or_batched(tiny_model):
    reqs = [TeacherRequest((("user", f"Write one new task about zone {i} " + "x " * i),), 8, 1.0, 0.9, 100 + i) for i in range(4)]
    today = LocalTeacher(tiny_model, "tiny", batch_size=4, num_threads=1).generate(reqs)
    kw = placement(cfg(device="cpu", dtype="float32"))
    batched = LocalTeacher(tiny_model, "tiny", batch_size=4, num_threads=1, **kw).generate(reqs)
    alone = LocalTeacher(tiny_model, "tiny", batch_size=1, num_threads=1, **placement(cfg())).generate(reqs)
    assert [r.text for r in today] == [r.text for r in batched] == [r.text for r in alone]
    assert len({r.text for r in today}) > 1, "the seeds drew different replies"


def test_a_static_kv_cache_gives_the_same_replies(tiny_model):
    """generation.teacher.static_cache (meant for a GPU, where transformers compiles the decoding step for it): the
    same seeded and greedy replies as the dynamic cache, in a batch of prompts of different lengths."""
    reqs = [TeacherRequest((("user", f"Write one new task about zone {i} " + "x " * (3 * i)),), 12, t, 0.9, 100 + i)
            for i in range(5) for t in (1.0, 0.0)]
    dynamic = LocalTeacher(tiny_model, "tiny", batch_size=5, num_threads=1).generate(reqs)
    static = LocalTeacher(tiny_model, "tiny", batch_size=5, num_threads=1, static_cache=True).generate(reqs)
    assert [r.text for r in static] == [r.text for r in dynamic] and len({r.text for r in dynamic}) > 2


def test_the_eval_batch_is_sized_by_device_unless_given():
    from eval.evaluate import batch_for

    assert (batch_for(0, "cpu"), batch_for(0, "cuda"), batch_for(0, "cuda:1")) == (8, 32, 32), "8 on the CPU: as before the policy"
    assert batch_for(3, "cuda") == 3 and batch_for(3, "cpu") == 3


def tiny_sentence_model(tiny_model: str, folder: Path) -> Path:
    """A random-weight BERT in the sentence-transformers layout (Transformer -> mean Pooling -> Normalize)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         pad_token_id=tok.pad_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    return folder


@no_cuda
def test_embeddings_are_the_same_under_the_policy(tiny_model, tmp_path):
    folder = tiny_sentence_model(tiny_model, tmp_path / "st")
    texts = ["Hold the Mode button.", "Error E07 means the rain sensor is disconnected.", "Only 2.4 GHz networks."]
    today = Embedder(str(folder), num_threads=1, batch_size=2).encode(texts)
    kw = placement(cfg(device="cpu", dtype="float32"))
    cpu = Embedder(str(folder), num_threads=1, batch_size=2, device=kw["device"], dtype=kw["dtype"]).encode(texts)
    assert today.dtype == np.float32 and np.array_equal(today, cpu)
    assert np.allclose(np.linalg.norm(today, axis=1), 1.0)
    shutil.rmtree(folder)
