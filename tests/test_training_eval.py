"""Real LoRA training steps on a tiny config-built model; eval loss checked against trl's own masking."""
import math

import pytest
import torch

from eval.config import EvalConfig
from eval.evaluate import encode, evaluate, load_student, task_losses
from training.config import TrainConfig
from training.sft import train_adapter

ROWS = [{"id": f"x{i}", "task": ["qa", "summarization"][i % 2],
         "prompt": [{"role": "user", "content": f"How do I reset controller {i}?"}],
         "completion": [{"role": "assistant", "content": f"Hold the Mode button for {i + 5} seconds."}]} for i in range(8)]

VARIED = [{"id": f"v{i}", "task": "qa", "prompt": [{"role": "user", "content": "Reset the controller? " * (i + 1)}],
           "completion": [{"role": "assistant", "content": "Hold the Mode button. " * (2 * i + 1)}]} for i in range(4)]


def _train(tiny_model, out, **kw):
    cfg = TrainConfig(**{"max_steps": 4, "batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1, **kw})
    return train_adapter(tiny_model, ROWS, out, cfg, seed=0, num_threads=1)


def test_lora_weights_move_and_base_weights_do_not(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    stats = _train(tiny_model, tmp_path / "a")
    assert stats["steps"] == 4 and math.isfinite(stats["train_loss"])
    assert stats["last_logged_loss"] < stats["first_logged_loss"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(tmp_path / "a"))
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "lora_B starts at zero and must have moved"
    base_sd = base.state_dict()
    for name, p in tuned.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base_sd[name.replace(".base_layer", "")]), name


def test_answer_only_masking_matches_trl(tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    args = SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, use_cpu=True, bf16=False, report_to="none", max_length=512)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, processing_class=tok,
                         train_dataset=Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in ROWS]))
    for row, processed in zip(ROWS, trainer.train_dataset):
        ids, labels = encode(tok, row["prompt"], row["completion"], 512)
        assert ids == processed["input_ids"]
        assert labels == processed["labels"], "same tokens supervised as trl, prompt positions -100"
        ours = [label != -100 for label in labels]
        answer = tok.decode([i for i, keep in zip(ids, ours) if keep])
        assert answer.startswith("Hold the Mode button") and "How do I reset" not in answer


def test_continue_starts_from_previous_adapter_restart_does_not(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _train(tiny_model, tmp_path / "first")
    cfg = TrainConfig(max_steps=1, batch_size=4, learning_rate=1e-12, logging_steps=1)
    train_adapter(tiny_model, ROWS, tmp_path / "cont", cfg, seed=0, num_threads=1, init_adapter=tmp_path / "first")
    train_adapter(tiny_model, ROWS, tmp_path / "fresh", cfg, seed=0, num_threads=1)

    def lora_b(d):
        m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(d))
        return torch.cat([p.flatten() for n, p in m.named_parameters() if "lora_B" in n])

    first, cont, fresh = lora_b(tmp_path / "first"), lora_b(tmp_path / "cont"), lora_b(tmp_path / "fresh")
    assert torch.allclose(first, cont, atol=1e-6), "continue keeps the previous adapter's weights (lr ~ 0)"
    assert fresh.abs().max() < 1e-6, "restart begins from a fresh adapter (lora_B = 0)"


def test_adapter_reloads_with_same_logits(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    _train(tiny_model, tmp_path / "a")
    m1, tok = load_student(tiny_model, str(tmp_path / "a"), 1)
    m2, _ = load_student(tiny_model, str(tmp_path / "a"), 1)
    x = tok("Hold the Mode button", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(m1(**x).logits, m2(**x).logits)
        base = AutoModelForCausalLM.from_pretrained(tiny_model)(**x).logits
        assert not torch.allclose(m1(**x).logits, base), "the adapter changes the output"


def test_batched_eval_loss_equals_one_at_a_time(tiny_model):
    model, tok = load_student(tiny_model, None, 1)
    batched = task_losses(model, tok, ROWS, batch_size=8, max_length=512)
    single = task_losses(model, tok, ROWS, batch_size=1, max_length=512)
    assert set(batched) == {"qa", "summarization"}
    for t in batched:
        assert batched[t]["loss"] == pytest.approx(single[t]["loss"], rel=1e-4)
        assert batched[t]["tokens"] == single[t]["tokens"] and batched[t]["examples"] == 4


def test_eval_loss_falls_after_training_on_the_same_rows(tiny_model, tmp_path):
    before = evaluate(tiny_model, None, ROWS, EvalConfig(generation_samples=2, max_new_tokens=4), 512, 1)
    _train(tiny_model, tmp_path / "a", max_steps=10)
    after = evaluate(tiny_model, str(tmp_path / "a"), ROWS, EvalConfig(generation_samples=2, max_new_tokens=4), 512, 1)
    assert after.loss < before.loss
    assert len(after.samples) == 2 and {s["task"] for s in after.samples} == {"qa", "summarization"}
    assert all(0 <= s["rouge_l"] <= 1 for s in after.samples)


def test_benchmark_loader_and_batched_greedy_equals_one_by_one(tiny_model, tmp_path):
    import json

    from conftest import TEST_DATA
    from eval.evaluate import sample_answers
    from generation.data.corpus import DataError
    from loop.evalsets import load_benchmark

    rows = load_benchmark(str(TEST_DATA / "self_instruct_user_oriented_instructions.jsonl"), 5)
    first = json.loads((TEST_DATA / "self_instruct_user_oriented_instructions.jsonl").read_text().splitlines()[0])
    assert len(rows) == 5 and rows[0]["completion"][0]["content"] == first["instances"][0]["output"]
    assert rows[0]["prompt"][0]["content"] == first["instruction"] + "\n\n" + first["instances"][0]["input"]
    model, tok = load_student(tiny_model, None, 1)
    batched = sample_answers(model, tok, rows, 6, batch_size=5)
    single = sample_answers(model, tok, rows, 6, batch_size=1)
    assert [s["student"] for s in batched] == [s["student"] for s in single]
    assert all(0 <= s["rouge_l"] <= 1 for s in batched)
    with pytest.raises(DataError, match="nope.jsonl does not exist"):
        load_benchmark(str(tmp_path / "nope.jsonl"), 5)


def test_padding_free_batches_attend_within_each_example(tiny_model):
    """trl's padding-free collator + this transformers: packed logits equal the padded batch's, per example."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tok = load_student(tiny_model, None, 1)
    ex = [dict(zip(("input_ids", "labels"), encode(tok, r["prompt"], r["completion"], 512))) for r in VARIED]
    assert len({len(e["input_ids"]) for e in ex}) > 1, "rows of different lengths, so padding matters"
    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(ex)
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(ex)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        lp = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        lu = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    offset = 0
    for i, e in enumerate(ex):
        n = len(e["input_ids"])
        assert torch.allclose(lp[offset:offset + n], lu[i, :n], atol=1e-5), f"example {i} saw another example"
        offset += n


def test_padding_free_training_loss_matches_padded(tiny_model, tmp_path):
    cfg = dict(max_steps=1, batch_size=4, learning_rate=1e-9, logging_steps=1)
    rows = VARIED
    free = train_adapter(tiny_model, rows, tmp_path / "free", TrainConfig(padding_free=True, **cfg), seed=0, num_threads=1)
    padded = train_adapter(tiny_model, rows, tmp_path / "pad", TrainConfig(padding_free=False, **cfg), seed=0, num_threads=1)
    assert free["first_logged_loss"] == pytest.approx(padded["first_logged_loss"], rel=1e-4)
    assert free["tokens_per_epoch"] == padded["tokens_per_epoch"]


@pytest.mark.parametrize("mode", ["keep_start", "keep_end"])
def test_padding_free_truncates_to_max_length_as_padded_training_does(mode, tiny_model, tmp_path):
    """trl does not truncate with padding_free; we cut as it does for padded rows, so the same tokens train either way."""
    cfg = dict(max_steps=1, batch_size=4, learning_rate=1e-9, logging_steps=1, max_length=40,  # prompts of 24-51 tokens, rows of 36-117
               sft_args={"truncation_mode": mode})
    free = train_adapter(tiny_model, VARIED, tmp_path / "free", TrainConfig(padding_free=True, **cfg), seed=0, num_threads=1)
    padded = train_adapter(tiny_model, VARIED, tmp_path / "pad", TrainConfig(padding_free=False, **cfg), seed=0, num_threads=1)
    whole = train_adapter(tiny_model, VARIED, tmp_path / "whole", TrainConfig(**{**cfg, "max_length": 512}), seed=0, num_threads=1)
    assert free["tokens_per_epoch"] == padded["tokens_per_epoch"] < whole["tokens_per_epoch"], "cut to 40 tokens a row (and, keeping the start, the rows left with no answer token dropped)"
    assert free["first_logged_loss"] == pytest.approx(padded["first_logged_loss"], rel=1e-4)


def test_trl_packing_asked_in_sft_args_still_trains(tiny_model, tmp_path):
    """sft_args.packing needs max_length, so it takes the padded path instead of padding-free (the default)."""
    stats = train_adapter(tiny_model, VARIED, tmp_path / "p", TrainConfig(max_steps=1, batch_size=2, max_length=64, sft_args={"packing": True}),
                          seed=0, num_threads=1)
    assert stats["steps"] == 1


def test_half_precision_training_keeps_every_trained_weight_in_float32(tiny_model, tmp_path):
    """peft upcasts LoRA A/B; a modules_to_save copy would stay in the load dtype (fp16's GradScaler refuses it)."""
    from safetensors.torch import load_file

    cfg = TrainConfig(max_steps=1, batch_size=4, lora_args={"modules_to_save": ["lm_head"]})
    train_adapter(tiny_model, VARIED, tmp_path / "a", cfg, seed=0, num_threads=1, device="cpu", dtype="bfloat16")
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert any("lm_head" in k for k in saved) and {t.dtype for t in saved.values()} == {torch.float32}


def test_answer_only_head_equals_full_logits(tiny_model, tmp_path):
    from eval.evaluate import answer_nll

    _train(tiny_model, tmp_path / "a")
    model, tok = load_student(tiny_model, str(tmp_path / "a"), 1)  # a PeftModel: the LoRA layers must still apply
    encoded = [encode(tok, r["prompt"], r["completion"], 512) for r in VARIED]
    width = max(len(x) for x, _ in encoded)
    ids = torch.full((len(encoded), width), tok.pad_token_id)
    labels = torch.full((len(encoded), width), -100)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for j, (x, y) in enumerate(encoded):
        ids[j, :len(x)], labels[j, :len(y)], mask[j, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    with torch.no_grad():
        nll, valid = answer_nll(model, ids, mask, labels)
        full = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits[:, :-1].transpose(1, 2),
                                                 labels[:, 1:], ignore_index=-100, reduction="none")
    assert torch.allclose(nll, full[valid], atol=1e-5)


def test_sft_args_and_lora_args_reach_the_trainer_and_bad_keys_are_named_at_once(tiny_model, tmp_path):
    """Any trl/peft field passes through: use_dora changes the adapter, weight_decay and optim reach trl's args."""
    import json

    from loop.config import ConfigError, load_config

    stats = train_adapter(tiny_model, ROWS, tmp_path / "dora", TrainConfig(max_steps=1, lora_args={"use_dora": True, "use_rslora": True},
                                                                           sft_args={"weight_decay": 0.1, "optim": "sgd"}), seed=0, num_threads=1)
    saved = json.loads((tmp_path / "dora" / "adapter_config.json").read_text())
    assert saved["use_dora"] is True and saved["use_rslora"] is True
    assert stats["sft_args"] == {"weight_decay": 0.1, "optim": "sgd"}
    _train(tiny_model, tmp_path / "plain", max_steps=1)
    assert json.loads((tmp_path / "plain" / "adapter_config.json").read_text())["use_dora"] is False
    with pytest.raises(ConfigError) as e:
        load_config(None, ["generation.domain_path=x", "training.lora_args={use_dorra: true, r: 4}",
                           "training.sft_args={learning_rate: 0.1, output_dir: /tmp/x, neftune_noise_alpah: 5}"])
    msg = str(e.value)
    for part in ("sft_args.learning_rate: set training.learning_rate instead", "sft_args.output_dir: set by the loop",
                 "sft_args.neftune_noise_alpah: not a trl SFTConfig field; did you mean 'neftune_noise_alpha'?",
                 "lora_args.use_dorra: not a peft LoraConfig field; did you mean 'use_dora'?", "lora_args.r: set training.lora_r instead"):
        assert part in msg, (part, msg)


def test_each_trainer_log_entry_reaches_on_log_as_it_is_written(tiny_model, tmp_path):
    """The W&B live curve's source: every logged step, with its learning rate and grad norm, in order."""
    seen = []
    stats = train_adapter(tiny_model, ROWS, tmp_path / "a", TrainConfig(max_steps=3, batch_size=4, logging_steps=1), seed=0,
                          num_threads=1, on_log=seen.append)
    steps = [e for e in seen if "loss" in e]
    assert [e["step"] for e in steps] == [1, 2, 3] and [e["loss"] for e in steps] == [h["loss"] for h in stats["loss_history"]]
    assert all("learning_rate" in e and "grad_norm" in e for e in steps)
