"""daig export RUN_DIR [--round N] --out DIR [--merge] [--push-to-hub REPO_ID] [--private | --public]: take an adapter home.

Copy the round's adapter folder (weights, tokenizer, model card, daig_adapter.json), or merge it into the base model
and save a plain transformers model with a full-model card. Either way the card's base_model, and adapter_config.json's
base_model_name_or_path, name the base's Hub id (a packaged model's upstream id), never the local folder it was
trained from. The folder is built beside --out and renamed into place, so a crash leaves no half folder.
--push-to-hub uploads it; push_to_hub and hub_operations serve `daig export-data` too (repo_type="dataset").
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

from loop.models import PACKAGED, hub_id, resolve_model
from loop.runfolder import read_config, round_dir, round_numbers
from training.artifacts import adapter_card, merged_card, set_adapter_base

log = logging.getLogger(__name__)
LEFT_OUT = {"training_args.bin"}  # a pickle of the trainer's arguments, local paths included; training_stats.json has them as JSON


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


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} is not empty; choose a new --out")


@contextmanager
def building(out: Path):
    """A folder to build `out` in, beside it, renamed into place once complete; removed if the build fails."""
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}"
    tmp.mkdir()  # not mkdtemp: its 0700 mode would stay on the finished folder
    try:
        yield tmp
        check_out(out)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def base_info(spec: str | None) -> dict:
    """What a card says of the base model a run trained: its Hub id, and for a packaged (quantized) copy what differs."""
    if not spec:
        return {"base_model": None}
    info = {"base_model": hub_id(spec)}
    if spec in PACKAGED and info["base_model"]:
        info["base_note"] = (f"the packaged `{spec}` ({PACKAGED[spec].note}) dequantized to float32; the upstream weights "
                             "differ from it by that quantization error")
    if info["base_model"] is None:
        log.warning("the base model %s is a local folder or file with no Hub id: the card and adapter_config.json name no base model", spec)
    return info


def export(run_dir: str | Path, out: str | Path, round_idx: int | None = None, merge: bool = False,
           repo_id: str | None = None) -> Path:
    """repo_id: the Hub repo the export is for (its card's snippet loads from there; else from --out as given)."""
    run_dir, out = Path(run_dir), Path(out)
    check_out(out)
    adapter = find_adapter(run_dir, round_idx)
    cfg = read_config(run_dir)
    saved = json.loads((adapter / "daig_adapter.json").read_text()) if (adapter / "daig_adapter.json").exists() else {}
    spec = cfg.get("student") or saved.get("base_model")
    info = {"round": int(adapter.parent.name), "rows": None, "data_sha256": None, **saved, **base_info(spec)}
    ref = repo_id or str(out)
    with building(out) as tmp:
        if merge:
            if not spec:
                raise FileNotFoundError(f"{run_dir} has no config.yaml naming its student model; --merge needs the base model")
            _merge(adapter, resolve_model(spec, cfg.get("cache_dir", "~/.cache/daig")), tmp)
            (tmp / "README.md").write_text(merged_card(info, ref))
        else:
            shutil.copytree(adapter, tmp, dirs_exist_ok=True, ignore=lambda _, names: [n for n in names if n in LEFT_OUT])
            set_adapter_base(tmp, info["base_model"])
            (tmp / "README.md").write_text(adapter_card(info, ref))
        (tmp / "daig_adapter.json").write_text(json.dumps({**info, "merged": merge}, indent=2, default=str))
    return out


def _merge(adapter: Path, base: str, out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(out)


def check_repo_id(repo_id: str) -> None:
    """A malformed --push-to-hub fails before any work, in one line."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"--push-to-hub {repo_id!r}: {str(e).splitlines()[0]} (expected USER/NAME)") from None


def hub_operations(folder: str | Path, paths: list[str] | None = None) -> list:
    """The files of an upload, as huggingface_hub commit operations (what push_to_hub sends): `paths` (relative to
    folder), or every file in it."""
    from huggingface_hub import CommitOperationAdd

    folder = Path(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file()) if paths is None else [folder / p for p in paths]
    return [CommitOperationAdd(path_in_repo=f.relative_to(folder).as_posix(), path_or_fileobj=str(f)) for f in files]


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True, repo_type: str = "model",
                paths: list[str] | None = None) -> str:
    """Create the repo if needed (private unless told otherwise; an existing repo keeps its visibility) and upload
    the folder's files (or `paths`) in one commit; returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()  # the token comes from HF_TOKEN or the user's login, never from our files
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    what = "dataset" if repo_type == "dataset" else "model"
    info = api.create_commit(repo_id, repo_type=repo_type, operations=hub_operations(folder, paths),
                             commit_message=f"Upload daig-loop {what}")
    return info.commit_url
