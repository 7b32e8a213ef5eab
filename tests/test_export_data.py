"""`daig export-data`: a real run folder (tiny student, loopback teacher, two rounds) as a Hugging Face dataset: the splits
round-trip through load_from_disk, Parquet and load_dataset; `messages` is what the trainer saw; the card parses with
the right metadata; the upload sends the card, config and Parquet files, counted where they arrive: a loopback Hub in
its own process (tests/hub_server.py), the only fake, at the network edge."""
import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_tiny_corpus
from hub_server import FAKE_TOKEN, HubServerProcess

from generation.rows import new_row, rejected_row
from loop.cli import main
from loop.export import hub_operations
from loop.export_data import build_dataset, export_data, upload_paths
from training.sft import student_row


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model):
    from openai_server import FakeOpenAI

    from loop.config import load_config
    from loop.controller import run

    root = tmp_path_factory.mktemp("export-data")
    corpus = write_tiny_corpus(root / "corpus")
    with FakeOpenAI() as server:
        cfg = load_config(None, [
            f"generation.domain_path={corpus}", "generation.teacher.backend=openai", f"generation.teacher.base_url={server.base_url}",
            "generation.teacher.model=fake-teacher", "generation.teacher.api_key_env=", f"generation.teacher.cache_path={root / 'cache.sqlite'}",
            "generation.daig.examples_per_round=12", "generation.novelty.threshold=0.92", f"student={tiny_model}", "rounds=2",
            "num_threads=1", "training.max_steps=2", "eval.generation_samples=1", "eval.max_new_tokens=4", "eval.validation_per_task=2",
            "eval.test_per_task=2", "generation.chunk_words=25", "tracking.wandb=false"])
        run(cfg, root / "run")
    return root / "run"


def test_export_round_trips_through_disk_parquet_and_load_dataset(run_dir, tmp_path):
    import datasets

    (tmp_path / "data").mkdir()  # an empty --out is fine
    out = export_data(run_dir, tmp_path / "data")
    kept = [r for f in sorted(run_dir.glob("rounds/*/data.jsonl")) for r in _jsonl(f)]
    rejected = [r for f in sorted(run_dir.glob("rounds/*/rejected.jsonl")) for r in _jsonl(f)]
    sets = {name: _jsonl(run_dir / "eval" / f"{name}.jsonl") for name in ("validation", "test")}
    assert kept and rejected and all(sets.values()) and {r["round"] for r in kept} == {1, 2}

    data = datasets.load_from_disk(str(out))
    assert list(data) == ["train", "validation", "test", "rejected"]
    assert {name: len(split) for name, split in data.items()} == {
        "train": len(kept), "validation": len(sets["validation"]), "test": len(sets["test"]), "rejected": len(rejected)}
    for row, got in zip(kept, data["train"]):  # the chat the student trained on, closed book as the run was
        trained = student_row(row, include_context=False)
        assert got["id"] == row["id"] and got["messages"] == trained["prompt"] + trained["completion"]
        assert got["loop_split"] == row["split"] and got["chunk_id"] == row["provenance"]["chunk_id"]
        assert got["source"] == row["provenance"]["chunk_id"].split("#")[0] and json.loads(got["provenance"]) == row["provenance"]
        assert json.loads(got["filters"]) == row["filters"] and got["pool_ids"] == row["provenance"]["example_ids"]
    for row, got in zip(rejected, data["rejected"]):
        assert (got["id"], got["stage"], got["reason"], got["raw"]) == (row["id"], row["stage"], row["reason"], row.get("raw"))  # decontamination rejects carry no raw
    assert data["validation"][0]["messages"][1]["content"] == sets["validation"][0]["output"]
    assert all(split.features == data["train"].features for split in data.values())  # one schema across splits

    parquet = sorted(p.name for p in (out / "data").iterdir())
    assert parquet == [f"{s}-00000-of-00001.parquet" for s in ("rejected", "test", "train", "validation")]
    table = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    assert table.num_rows == len(kept) and table.column("messages").to_pylist() == data["train"]["messages"]
    assert len({pq.read_schema(out / "data" / p) for p in parquet}) == 1
    hub_layout = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))  # the card's configs point at data/
    assert {name: len(split) for name, split in hub_layout.items()} == {name: len(split) for name, split in data.items()}
    assert (out / "config.yaml").read_bytes() == (run_dir / "config.yaml").read_bytes()
    assert not list(tmp_path.glob(".data.*"))  # the build folder was renamed into place


def test_dataset_card_metadata_and_counts(run_dir, tmp_path):
    from huggingface_hub import DatasetCard, RepoCard

    out = export_data(run_dir, tmp_path / "data", repo_id="me/ferncast-data", license="cc-by-4.0")
    card = DatasetCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-4.0" and meta["task_categories"] == ["text-generation"]
    assert {"synthetic", "daig-loop", "daig"} <= set(meta["tags"]) and meta["size_categories"] == ["n<1K"]
    assert [c["split"] for c in meta["configs"][0]["data_files"]] == ["train", "validation", "test", "rejected"]
    assert RepoCard.load(out / "README.md").data.to_dict() == meta
    text = card.text
    assert "`fake-teacher`" in text and "`daig`" in text and "closed book" in text and "examples_per_round: 12" in text
    assert 'load_dataset("me/ferncast-data")' in text and str(run_dir.parent) not in text  # no local path in the card
    rejected = [r for f in run_dir.glob("rounds/*/rejected.jsonl") for r in _jsonl(f)]
    reason = max({r["reason"] for r in rejected}, key=[r["reason"] for r in rejected].count)
    stage = next(r["stage"] for r in rejected if r["reason"] == reason)
    assert f"| {stage} | {reason} | {sum(r['reason'] == reason and r['stage'] == stage for r in rejected)} |" in text
    n_kept = sum(len(_jsonl(f)) for f in run_dir.glob("rounds/*/data.jsonl"))
    assert f"| **all** | {n_kept} | 12 | 12 | {len(rejected)} |" in text  # 6 tasks x 2 rows per eval set


def test_upload_lists_card_config_and_parquet_and_defaults_private(run_dir, tmp_path):
    """A real `daig export-data --push-to-hub` process against the loopback Hub (tests/hub_server.py): what arrives there
    is the card, config and Parquet files, byte for byte, in a private dataset repo unless --public."""
    out = export_data(run_dir, tmp_path / "data")
    ops = hub_operations(out, upload_paths(out))
    paths = ["README.md", "config.yaml", "data/rejected-00000-of-00001.parquet", "data/test-00000-of-00001.parquet",
             "data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"]
    assert [op.path_in_repo for op in ops] == paths
    assert all(Path(op.path_or_fileobj).is_file() for op in ops)

    with HubServerProcess(tmp_path) as hub:
        done = hub.daig("export-data", str(run_dir), "--out", str(tmp_path / "pushed"), "--push-to-hub", "me/ferncast-data")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "pushed (private repo me/ferncast-data)" in done.stdout
        done = hub.daig("export-data", str(run_dir), "--out", str(tmp_path / "public"), "--push-to-hub", "me/open-data", "--public")
        assert done.returncode == 0, done.stderr[-3000:]
        log = hub.requests()
    assert all(r["status"] == 200 and r["token"] == FAKE_TOKEN for r in log), log  # every call known to the test Hub, authenticated
    calls = [(r["path"].split("/")[-2] if "/commit/" in r["path"] else r["path"], r["repo_id"], r["repo_type"], r.get("private"))
             for r in log if r["path"] == "/api/repos/create" or "/commit/" in r["path"]]
    assert calls == [("/api/repos/create", "me/ferncast-data", "dataset", True), ("commit", "me/ferncast-data", "dataset", None),
                     ("/api/repos/create", "me/open-data", "dataset", False), ("commit", "me/open-data", "dataset", None)]
    for repo_id, folder in (("me/ferncast-data", tmp_path / "pushed"), ("me/open-data", tmp_path / "public")):
        commit = next(r for r in log if "/commit/" in r["path"] and r["repo_id"] == repo_id)
        assert [f["path"] for f in commit["files"]] == paths  # not the save_to_disk Arrow files beside them
        for f in commit["files"]:  # the bytes that arrived are the bytes exported
            data = (folder / f["path"]).read_bytes()
            assert (f["size"], f["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        assert not [p for p in folder.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]  # the token is never written
    assert any(p.suffix == ".arrow" for p in (tmp_path / "pushed").rglob("*"))
    assert 'load_dataset("me/ferncast-data")' in (tmp_path / "pushed" / "README.md").read_text()


def test_a_refused_push_is_one_line_and_keeps_the_export(run_dir, tmp_path):
    """The Hub answers 401 (a bad or read-only token): exit 2, one line saying the export is complete and how to log
    in and push again; the dataset folder is there; nothing was committed."""
    with HubServerProcess(tmp_path, refuse=("me/no-rights",)) as hub:
        done = hub.daig("export-data", str(run_dir), "--out", str(tmp_path / "kept"), "--push-to-hub", "me/no-rights")
        log = hub.requests()
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err, err
    assert err.startswith(f"error: pushing {tmp_path / 'kept'} to me/no-rights failed (") and "401" in err
    assert "the export is complete; log in with `hf auth login` or set HF_TOKEN" in err
    assert (tmp_path / "kept" / "README.md").is_file() and len(list((tmp_path / "kept" / "data").glob("*.parquet"))) == 4
    assert [r["status"] for r in log if r["path"] == "/api/repos/create"] == [401]
    assert not [r for r in log if "/commit/" in r["path"] or "/preupload/" in r["path"]]
    # the hinted `hf upload` (here to a repo the token may write) sends exactly what --push-to-hub would have sent
    hint = err.split("push with `")[1].rstrip("`").replace("me/no-rights", "me/retry")
    with HubServerProcess(tmp_path) as hub:
        hf = str(Path(sys.executable).parent / "hf")
        again = subprocess.run(shlex.split(hint.replace("hf ", hf + " ", 1)), env=hub.env(), capture_output=True, text=True, timeout=300)
        log = hub.requests()
    assert again.returncode == 0, again.stderr[-2000:]
    (commit,) = [r for r in log if "/commit/" in r["path"]]
    kept = tmp_path / "kept"
    assert sorted(f["path"] for f in commit["files"]) == sorted(upload_paths(kept)) and commit["repo_type"] == "dataset"


def test_rows_of_every_method_share_one_schema(tmp_path):
    """daig, evol_instruct, self_instruct and dynosaur rows, a user's eval rows and rejected rows: one Arrow schema."""
    daig = {**new_row("r1-00000", 1, "daig", "qa", "t", {"instruction": "k1"}, {"example_ids": ["gen-qa-1"], "chunk_id": "a.md#0",
                                                                                "heading": "Reset"}),
            "instruction": "How do I reset it?", "input": "", "context": "Hold Mode for ten seconds.", "output": "Hold Mode.", "split": "train"}
    evol = {**new_row("r2-00000", 2, "evol_instruct", "qa", "t", {"evolve": "k2"}, {"parent_id": "r1-00000", "operator": "deepen", "depth": 1}),
            "instruction": "Why hold Mode?", "input": "", "output": "To reset.", "split": "eval"}
    self_instruct = {**new_row("r1-00001", 1, "self_instruct", "generation", "t", {"instruction": "k3"},
                               {"prompt": 0, "prompt_instructions": ["a", "b"], "machine_in_prompt": [False, True], "seed_ids": ["seed_1"]}),
                     "instruction": "Write a haiku.", "input": "", "output": "Snow.", "split": "train"}
    dynosaur = {**new_row("r1-00002", 1, "dynosaur", "extraction", "t", {"tasks": "k4"},
                          {"task_index": 0, "input_fields": ["text"], "output_field": "label", "row_index": 3}),
                "instruction": "Label it.", "input": "text: hi", "output": "greeting", "split": "train"}
    rejected = [rejected_row(new_row("r1-00003", 1, "daig", "qa", "t"), "instruction", "too_short", "Hi."),
                rejected_row(evol, "answer_judge", "not_better", "No.")]
    user_eval = [{"id": "validation-1", "task": "qa", "instruction": "What resets it?", "input": "", "output": "Mode."}]
    data = build_dataset({"training": {"include_context": True}}, {"train": [daig, evol, self_instruct, dynosaur], "rejected": rejected,
                                                                   "validation": user_eval})
    assert all(split.features == data["train"].features for split in data.values())
    train = data["train"]
    assert train["pool_ids"] == [["gen-qa-1"], ["r1-00000"], [], []]
    assert train[0]["messages"][0]["content"] == "Hold Mode for ten seconds.\n\nHow do I reset it?"  # open book: the chunk first
    assert json.loads(train[2]["provenance"])["seed_ids"] == ["seed_1"] and train[1]["loop_split"] == "eval"
    assert data["rejected"]["messages"] == [[], evol_messages(evol)] and data["rejected"]["reason"] == ["too_short", "not_better"]
    assert data["validation"][0]["round"] is None and data["validation"][0]["loop_split"] is None
    for name, split in data.items():
        split.to_parquet(str(tmp_path / f"{name}.parquet"))
    assert len({pq.read_schema(tmp_path / f"{name}.parquet") for name in data}) == 1


def evol_messages(row):
    trained = student_row(row, include_context=True)
    return trained["prompt"] + trained["completion"]


def test_bad_input_is_one_line_and_leaves_nothing(run_dir, tmp_path, monkeypatch, capsys):
    import datasets

    def fails(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        return err

    assert "is not a folder" in fails(["export-data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    assert "has no config.yaml" in fails(["export-data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty" / "config.yaml").write_text("seed: 0\n")
    assert "no rounds/<r>/data.jsonl" in fails(["export-data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert "is not empty" in fails(["export-data", str(run_dir), "--out", str(tmp_path / "full")])
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert "USER/NAME" in fails(["export-data", str(run_dir), "--out", str(tmp_path / "o"), "--push-to-hub", "not a repo!"])
    assert not (tmp_path / "o").exists()

    def disk_full(self, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(datasets.Dataset, "to_parquet", disk_full)  # a crash midway through the build
    with pytest.raises(OSError):
        export_data(run_dir, tmp_path / "o")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))
