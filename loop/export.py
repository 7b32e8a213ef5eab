"""daig export RUN_DIR [--round N] --out DIR [--merge] [--push-to-hub REPO_ID]: take an adapter home.

Copy the round's adapter folder (weights, tokenizer, model card, daig_adapter.json), or merge it into
the base model and save a plain transformers model. --push-to-hub uploads the result.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from loop.models import resolve_model
from loop.runfolder import read_config, round_dir, round_numbers


def find_adapter(run_dir: Path, round_idx: int | None) -> Path:
    rounds = [(r, round_dir(run_dir, r) / "adapter") for r in round_numbers(run_dir) if (round_dir(run_dir, r) / "adapter").is_dir()]
    if not rounds:
        raise FileNotFoundError(f"{run_dir} has no rounds/<r>/adapter; is it a daig run folder?")
    if round_idx is None:
        return rounds[-1][1]
    found = dict(rounds).get(round_idx)
    if found is None:
        raise FileNotFoundError(f"{run_dir} has no adapter for round {round_idx}; rounds with adapters: {[r for r, _ in rounds]}")
    return found


def export(run_dir: str | Path, out: str | Path, round_idx: int | None = None, merge: bool = False) -> Path:
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new --out")
    adapter = find_adapter(run_dir, round_idx)
    if not merge:
        shutil.copytree(adapter, out, dirs_exist_ok=True)
        return out
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = read_config(run_dir)
    base = resolve_model(cfg["student"], cfg.get("cache_dir", "~/.cache/daig"))
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(out)
    for name in ("README.md", "daig_adapter.json"):
        if (adapter / name).exists():
            shutil.copy(adapter / name, out / name)
    return out


def hub_operations(folder: str | Path) -> list:
    """The files of an upload, as huggingface_hub commit operations (what push_to_hub sends)."""
    from huggingface_hub import CommitOperationAdd

    folder = Path(folder)
    return [CommitOperationAdd(path_in_repo=str(f.relative_to(folder)), path_or_fileobj=str(f))
            for f in sorted(folder.rglob("*")) if f.is_file()]


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True) -> str:
    from huggingface_hub import HfApi

    api = HfApi()  # the token comes from HF_TOKEN or the user's login, never from our files
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.create_commit(repo_id, operations=hub_operations(folder), commit_message="Upload daig-loop adapter")
    return info.commit_url
