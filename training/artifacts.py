"""What travels with an adapter: its training config, a hash of its data, and a model card."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def data_hash(rows: list[dict]) -> str:
    """SHA-256 of the training rows (prompt and completion, in order): two adapters with the same hash saw the same data."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps([r["prompt"], r["completion"]], sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def write_adapter_card(adapter_dir: str | Path, info: dict) -> None:
    """daig_adapter.json (machine-readable) and README.md (a model card) beside the adapter weights.

    info: base_model, round, rows, data_sha256, train (config + stats), metrics (eval figures)."""
    adapter_dir = Path(adapter_dir)
    (adapter_dir / "daig_adapter.json").write_text(json.dumps(info, indent=2, default=str))
    metrics = info.get("metrics", {})
    losses = metrics.get("task_eval_loss") or {}
    loss_lines = "\n".join(f"| {t} | {v:.4f} |" if v is not None else f"| {t} | n/a |" for t, v in losses.items())
    train = info.get("train", {})
    card = f"""---
library_name: peft
base_model: {info['base_model']}
tags: [lora, daig-loop, instruction-tuning]
---

# LoRA adapter, round {info['round']} of a daig-loop run

- Base model: `{info['base_model']}`
- Training rows: {info['rows']} (SHA-256 of the rows: `{info['data_sha256']}`)
- LoRA: r={train.get('lora_r')}, alpha={train.get('lora_alpha')}, dropout={train.get('lora_dropout')}, targets={train.get('target_modules')}
- Steps: {train.get('steps')}, final train loss: {train.get('train_loss')}
- Held-out eval loss (all tasks): {metrics.get('eval_loss')}

| task | held-out answer loss |
|---|---|
{loss_lines}

Load it with:

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{info['base_model']}"), "<this folder>")
```

The rows it was trained on are in the run's `rounds/*/data.jsonl` (split == "train"), with their provenance.
"""
    (adapter_dir / "README.md").write_text(card)
