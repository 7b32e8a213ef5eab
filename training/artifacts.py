"""What travels with an adapter: its training config, a hash of its data, and a model card (made with huggingface_hub's
card API): an adapter's (library peft), or, once merged into its base, a full model's."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

PROMPT = "What can you help me with?"  # the example question of the cards' load snippets


def data_hash(rows: list[dict]) -> str:
    """SHA-256 of the training rows (prompt and completion, in order): two adapters with the same hash saw the same data."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps([r["prompt"], r["completion"]], sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def write_adapter_card(adapter_dir: str | Path, info: dict, adapter_ref: str | None = None) -> None:
    """daig_adapter.json (machine-readable) and README.md (a model card) beside the adapter weights.

    info: base_model (a Hub id where one is known, else the run's model spec), round, rows, data_sha256, train (config +
    stats), metrics (eval figures), and optionally base_note (how the trained-on base differs from base_model).
    adapter_ref: what the card's load snippet loads the adapter from (a Hub repo id; default this folder)."""
    adapter_dir = Path(adapter_dir)
    (adapter_dir / "daig_adapter.json").write_text(json.dumps(info, indent=2, default=str))
    (adapter_dir / "README.md").write_text(adapter_card(info, adapter_ref or str(adapter_dir)))


def set_adapter_base(adapter_dir: str | Path, base_model: str | None) -> None:
    """Name base_model (a Hub id, or None when there is none) in adapter_config.json, where peft wrote the local path
    the adapter was trained from."""
    path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def adapter_card(info: dict, adapter_ref: str) -> str:
    """The model card of a LoRA adapter: base_model (the Hub id) in its metadata, a load snippet that runs as written."""
    base = _q(info.get("base_model") or "path/to/the/base/model")
    # The tokenizer comes from the base: the adapter saved the same one, but transformers' AutoTokenizer also wants the
    # config.json that only the base repo has.
    load = (f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base}), {_q(adapter_ref)})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({base})")
    body = f"""# LoRA adapter, round {info['round']} of a daig-loop run

{_facts(info)}

Load it with:

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

{load}
{_chat()}
```

{_prompting(info)}
"""
    return _card(dict(base_model=info.get("base_model"), library_name="peft", pipeline_tag="text-generation",
                      tags=["lora", "daig-loop", "instruction-tuning", "text-generation"]), body)


def merged_card(info: dict, model_ref: str) -> str:
    """The model card of the adapter merged into its base: a plain transformers model, a fine-tune of base_model."""
    base = info.get("base_model")
    body = f"""# Fine-tuned model: round {info['round']} of a daig-loop run, LoRA merged

A full model: the round's LoRA adapter merged into {f'`{base}`' if base else 'its base model'} (peft's `merge_and_unload`),
saved as a plain transformers model. It needs no peft to load.

{_facts(info)}

Load it with:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained({_q(model_ref)})
tokenizer = AutoTokenizer.from_pretrained({_q(model_ref)})
{_chat()}
```

{_prompting(info)}
"""
    # base_model_relation: the Hub's 'merge' is for merges of several models; one LoRA merged into its own base is a
    # fine-tune of that base, so the model tree lists it under the base's fine-tunes.
    return _card(dict(base_model=base, base_model_relation="finetune" if base else None, library_name="transformers",
                      pipeline_tag="text-generation", tags=["daig-loop", "instruction-tuning", "lora-merged", "text-generation"]), body)


def _card(metadata: dict, body: str) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    return str(ModelCard(f"---\n{ModelCardData(**metadata).to_yaml()}\n---\n\n{body}"))


def _q(text: str) -> str:
    return json.dumps(text)  # a Python string literal


def _chat() -> str:
    return (f"messages = [{{\"role\": \"user\", \"content\": {_q(PROMPT)}}}]\n"
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors=\"pt\")\n"
            "reply = model.generate(**inputs, max_new_tokens=64)\n"
            "print(tokenizer.decode(reply[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))")


def _facts(info: dict) -> str:
    metrics, train = info.get("metrics", {}), info.get("train", {})
    losses = metrics.get("task_eval_loss") or {}
    loss_lines = "\n".join(f"| {t} | {v:.4f} |" if v is not None else f"| {t} | n/a |" for t, v in losses.items())
    base = info.get("base_model")
    lines = [f"- Base model: `{base}`" if base else "- Base model: a local model with no Hub id (load it from your copy)"]
    if info.get("base_note"):
        lines.append(f"- Trained on: {info['base_note']}")
    lines += [f"- Training rows: {info['rows']} (SHA-256 of the rows: `{info['data_sha256']}`)",
              f"- LoRA: r={train.get('lora_r')}, alpha={train.get('lora_alpha')}, dropout={train.get('lora_dropout')}, targets={train.get('target_modules')}",
              f"- Steps: {train.get('steps')}, final train loss: {train.get('train_loss')}",
              f"- Held-out eval loss (all tasks): {metrics.get('eval_loss')}"]
    table = f"\n\n| task | held-out answer loss |\n|---|---|\n{loss_lines}" if losses else ""
    return "\n".join(lines) + table


def _prompting(info: dict) -> str:
    open_book = (info.get("train") or {}).get("include_context")
    how = ("the domain passage, the instruction and its input, separated by blank lines (open book)" if open_book else
           "the instruction, then its input after a blank line when it has one (closed book: no passage)")
    return (f"It was trained on one user turn holding {how}, answered by one assistant turn, in the base model's chat "
            "template. The rows are in the run's `rounds/*/data.jsonl` with their provenance; `daig export-data RUN_DIR "
            "--out DIR` makes them a Hugging Face dataset.")
