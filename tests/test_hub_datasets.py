"""Hub dataset ids read through the real `datasets` + huggingface_hub, from the loopback Hub (hub_server.py): the pool
and corpus loaders with generation.datasets' options (revision, config, data_files), each claim counted at the server.

Each load runs in a fresh interpreter: huggingface_hub reads HF_ENDPOINT when imported, and conftest sets
HF_HUB_OFFLINE=1 for this process. HF_HOME (and with it the datasets and hub caches) is the test's tmp_path."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hub_server import DOCS_SHA, FAKE_TOKEN, TASKS_NEW, TASKS_OLD, HubServerProcess

POOL = """
import json
from generation.config import GenerationConfig
from generation.data.corpus import DataError
from generation.data.pool import load_pools
try:
    pool = load_pools(GenerationConfig(general_pool={id!r}, datasets={options!r}))
    print(json.dumps(sorted([i.task, i.instruction] for items in pool.values() for i in items)))
except DataError as e:
    print(json.dumps({{"error": str(e)}}))
"""

CORPUS = """
import json
from generation.data.corpus import load_corpus
print(json.dumps([[c.id, c.text] for c in load_corpus("me/docs", 50, hub={"revision": %r})]))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServerProcess(tmp_path_factory.mktemp("hub")) as server:
        yield server


def load(hub, home, code: str):
    """Run code in a fresh interpreter pointed at the test Hub; (its JSON output, the requests it made)."""
    before = len(hub.requests())
    env = {**hub.env(), "HF_HOME": str(home / "hf"), "HF_DATASETS_CACHE": str(home / "hf" / "datasets"),
           "HF_DATASETS_OFFLINE": "0"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=home, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), hub.requests()[before:]


def pool_code(options: dict, id: str = "me/tasks") -> str:
    return POOL.format(id=id, options={id: options} if options else {})


def test_revision_pins_what_is_downloaded(hub, tmp_path):
    """Two pinned revisions, one cache: each load asks the Hub for its own commit only and gets that commit's rows."""
    for sha, rows in ((TASKS_OLD, [["qa", "Old question one?"], ["qa", "Old question two?"]]),
                      (TASKS_NEW, [["qa", "New question one?"], ["rewrite", "New rewrite one."]])):
        got, reqs = load(hub, tmp_path, pool_code({"revision": sha}))
        assert got == rows
        assert reqs and {(r["repo_id"], r["revision"], r.get("commit")) for r in reqs} == {("me/tasks", sha, sha)}
        assert {r["token"] for r in reqs} == {FAKE_TOKEN}
        assert [r["method"] for r in reqs if r.get("file") == "tasks.csv" and r["status"] == 200] == ["HEAD", "GET"]
        assert not [r for r in reqs if r["status"] == 200 and r.get("file") not in (None, "tasks.csv", "README.md")]


def test_config_selects_its_files(hub, tmp_path):
    got, reqs = load(hub, tmp_path, pool_code({"revision": TASKS_NEW, "config": "summaries"}))
    assert got == [["summarize", "Summarize the first passage."]]
    assert {r["file"] for r in reqs if r["method"] == "GET" and r.get("file")} == {"README.md", "sum.csv"}
    assert {r["revision"] for r in reqs} == {TASKS_NEW}


def test_data_files_select_their_files(hub, tmp_path):
    got, reqs = load(hub, tmp_path, pool_code({"revision": TASKS_NEW, "data_files": ["qa.csv"]}))
    assert got == [["qa", f"Config question {n}?"] for n in ("one", "three", "two")]
    assert {r["file"] for r in reqs if r["method"] == "GET" and r.get("file")} == {"README.md", "qa.csv"}
    assert {r["revision"] for r in reqs} == {TASKS_NEW}


def test_corpus_from_a_hub_id(hub, tmp_path):
    got, reqs = load(hub, tmp_path, CORPUS % DOCS_SHA)
    assert got == [["docs:0#0", "The Ferncast controller waters eight zones."],
                   ["docs:1#0", "Hold the Mode button for ten seconds to reset it."]]
    assert [r["method"] for r in reqs if r.get("file") == "docs.jsonl"] == ["HEAD", "GET"]
    assert {(r["repo_id"], r["revision"]) for r in reqs} == {("me/docs", DOCS_SHA)}


def test_unknown_id_is_one_line_naming_it(hub, tmp_path):
    got, reqs = load(hub, tmp_path, pool_code({}, id="me/nope"))
    assert "'me/nope'" in got["error"] and "\n" not in got["error"], got
    assert reqs and all(r["repo_id"] == "me/nope" and r["status"] == 404 for r in reqs)
