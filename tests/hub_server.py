"""A loopback HTTP server speaking the few Hugging Face Hub endpoints that `daig export --push-to-hub` and
`daig export-data --push-to-hub` reach (HfApi.create_repo, then HfApi.create_commit): the one allowed fake, at the
network edge. The client is the real huggingface_hub, pointed here with HF_ENDPOINT, so what a push sends is
counted where it arrives, in this process's log, never in our own code.

Endpoints (as huggingface_hub 2.4 calls them, see its hf_api.py and _commit_api.py):
  POST /api/repos/create                         {"name", "organization", "visibility"|"private", "type"} -> {"url"}
  POST /api/validate-yaml                        create_commit checks README.md's metadata first -> no errors
  POST /api/{type}s/{ns}/{name}/preupload/{rev}  every file "regular" (inline base64 in the commit, so no LFS or Xet
                                                 upload path is taken); shouldIgnore is read unconditionally
  POST /api/{type}s/{ns}/{name}/commit/{rev}     NDJSON: a header line, then {"key": "file", "value": {"path",
                                                 "content" (base64), "encoding"}} lines, decoded and hashed here
Read-only dataset repos (DATASETS below), as `datasets.load_dataset(id, revision=...)` reads one through
huggingface_hub's hf_hub_download and HfFileSystem:
  HEAD|GET /datasets/{ns}/{name}/resolve/{rev}/{path}   file bytes; ETag (git blob sha1), X-Repo-Commit, Content-Length
  GET  /api/datasets/{ns}/{name}/revision/{rev}         dataset_info: {"id", "sha", "siblings": [{"rfilename"}]}
  GET  /api/datasets/{ns}/{name}/tree/{rev}[/{dir}]     the files of that revision (all at the top level; a folder is
                                                        EntryNotFound, as the Hub answers the `data` folder it probes)
(datasets 5.2 / huggingface_hub 2.4 call exactly these: first README.md (absent: dataset_info), then <name>.py,
.huggingface.yaml, a tree listing, dataset_infos.json, then HEAD + GET of each data file.)
{rev} is a commit sha or a branch ("main"); each request's entry records it as "revision" (as asked, URL-decoded) and
"commit" (the sha it resolved to). The Hub's error codes come back as its X-Error-Code header does: RepoNotFound for
an unknown id, RevisionNotFound for an unknown revision, EntryNotFound for a file a revision lacks.
Anything else gets a 404 and is logged with the rest, so a new call of a newer client shows up in the log.
A repo named in `refuse` (e.g. "me/no-rights") gets 401 on every request, as the Hub answers a bad or read-only token.

Each request is one JSON line in the log, written before the reply: {"method", "path", "status", "token" (the bearer
token sent), "repo_id", "repo_type", "private" (create), "files": [{"path", "size", "sha256"}] (commit)}.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

REPO_PATH = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)")
FAKE_TOKEN = "hf_" + "loopbacktesttoken" * 2  # shaped like a user token (hf_ and 34 letters); only ever sent here
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # how the Hub spells a repo's URL per type



def _csv(*rows: tuple[str, str]) -> bytes:
    return ("task,instruction\n" + "".join(f"{t},{i}\n" for t, i in rows)).encode()


# A dataset repo: {"branches": {name: commit sha}, "commits": {sha: {path: bytes}}}. me/tasks has two commits whose
# tasks.csv differ; the newer (main) also has a README.md whose `configs:` name three configs, each its own file.
TASKS_OLD, TASKS_NEW, DOCS_SHA = "1" * 40, "2" * 40, "d0c5" * 10
TASKS_README = b"""---
configs:
- config_name: default
  data_files: tasks.csv
- config_name: qa
  data_files: qa.csv
- config_name: summaries
  data_files: sum.csv
---
# me/tasks, a test dataset of the loopback Hub
"""
DATASETS = {
    "me/tasks": {"branches": {"main": TASKS_NEW}, "commits": {
        TASKS_OLD: {"tasks.csv": _csv(("qa", "Old question one?"), ("qa", "Old question two?"))},
        TASKS_NEW: {"README.md": TASKS_README,
                    "tasks.csv": _csv(("qa", "New question one?"), ("rewrite", "New rewrite one.")),
                    "qa.csv": _csv(("qa", "Config question one?"), ("qa", "Config question two?"), ("qa", "Config question three?")),
                    "sum.csv": _csv(("summarize", "Summarize the first passage."))}}},
    "me/docs": {"branches": {"main": DOCS_SHA}, "commits": {
        DOCS_SHA: {"docs.jsonl": b'{"text": "The Ferncast controller waters eight zones."}\n'
                                 b'{"text": "Hold the Mode button for ten seconds to reset it."}\n'}}},
}
DATASET_PATH = re.compile(r"^(?:/api)?/datasets/([^/]+/[^/]+)/(resolve|revision|tree)/([^/]+)/?(.*)$")


def _blob_sha1(data: bytes) -> str:
    """The id git (and so the Hub's ETag for a small file) gives these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_log(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def make_server(port: int, log_path: str, refuse: set[str]) -> ThreadingHTTPServer:
    lock = threading.Lock()
    log = open(log_path, "a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):  # repo_info after a refused create, or anything a newer client asks first
            if DATASET_PATH.match(self.path.split("?")[0]):
                return self._dataset()
            repo = re.match(r"^/api/(models|datasets|spaces)/([^/]+/[^/?]+)", self.path)
            entry = {"repo_id": repo.group(2), "repo_type": repo.group(1)[:-1]} if repo else {}
            self._reply(401 if entry.get("repo_id") in refuse else 404, {"error": "not served by the test hub"}, entry)

        do_HEAD = do_GET  # file metadata probes (e.g. transformers looking for a file): logged, answered 404

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path.split("?")[0]
            base = f"http://{self.headers['Host']}"
            if path == "/api/repos/create":
                p = json.loads(body)
                repo_id = f"{p['organization']}/{p['name']}" if p.get("organization") else p["name"]
                repo_type = p.get("type") or "model"
                private = p["visibility"] == "private" if "visibility" in p else bool(p.get("private"))
                entry = {"repo_id": repo_id, "repo_type": repo_type, "private": private}
                if repo_id in refuse:
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"}, entry)
                return self._reply(200, {"url": f"{base}/{URL_PREFIX[repo_type]}{repo_id}", "name": repo_id}, entry)
            if path == "/api/validate-yaml":
                return self._reply(200, {"errors": [], "warnings": []}, {"repo_type": json.loads(body).get("repoType")})
            m = REPO_PATH.match(path)
            if not m:
                return self._reply(404, {"error": "not served by the test hub"}, {})
            repo_type, repo_id, action = m.group(1)[:-1], m.group(2), m.group(3)
            entry = {"repo_id": repo_id, "repo_type": repo_type}
            if repo_id in refuse:
                return self._reply(401, {"error": "Invalid credentials in Authorization header"}, entry)
            if action == "preupload":
                files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                         for f in json.loads(body)["files"]]
                return self._reply(200, {"files": files}, entry)
            files = []  # the commit: one JSON object a line, files inline as base64
            for line in body.splitlines():
                item = json.loads(line) if line.strip() else {}
                if item.get("key") == "file":
                    data = base64.b64decode(item["value"]["content"])
                    files.append({"path": item["value"]["path"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                elif item.get("key") not in (None, "header"):  # lfsFile, deletedFile...: not what a push of ours sends
                    files.append({"path": item.get("value", {}).get("path"), "unexpected": item["key"]})
            oid = hashlib.sha1(body).hexdigest()
            self._reply(200, {"success": True, "commitOid": oid, "pullRequestUrl": None,
                              "commitUrl": f"{base}/{URL_PREFIX[repo_type]}{repo_id}/commit/{oid}"}, {**entry, "files": files})

        def _dataset(self) -> None:
            """A read of a DATASETS repo (see the module docstring)."""
            repo_id, action, rev, rest = DATASET_PATH.match(self.path.split("?")[0]).groups()
            rev, rest = unquote(rev), unquote(rest)
            entry = {"repo_id": repo_id, "repo_type": "dataset", "action": action, "revision": rev}
            repo = DATASETS.get(repo_id)
            if repo is None or repo_id in refuse:
                return self._reply(401 if repo_id in refuse else 404, {"error": "Repository not found"}, entry, {"X-Error-Code": "RepoNotFound"})
            sha = repo["branches"].get(rev, rev)
            files = repo["commits"].get(sha)
            if files is None:
                return self._reply(404, {"error": f"Invalid rev id: {rev}"}, entry, {"X-Error-Code": "RevisionNotFound"})
            entry["commit"] = sha
            if action == "resolve":
                if rest not in files:
                    return self._reply(404, {"error": "Entry not found"}, {**entry, "file": rest},
                                       {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
                data = files[rest]
                return self._send(200, data, "application/octet-stream", {**entry, "file": rest},
                                  {"ETag": f'"{_blob_sha1(data)}"', "X-Repo-Commit": sha, "Accept-Ranges": "none"})
            if action == "revision":
                return self._reply(200, {"id": repo_id, "sha": sha, "private": False, "disabled": False, "gated": False,
                                         "siblings": [{"rfilename": f} for f in sorted(files)]}, entry)
            if rest.strip("/"):  # tree: every file sits at the top level, so a folder is not there
                return self._reply(404, {"error": "Entry not found"}, {**entry, "file": rest}, {"X-Error-Code": "EntryNotFound"})
            return self._reply(200, [{"type": "file", "path": f, "size": len(d), "oid": _blob_sha1(d)}
                                     for f, d in sorted(files.items())], entry)

        def _reply(self, code: int, obj, entry: dict, headers: dict | None = None) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json", entry, headers or {})

        def _send(self, code: int, data: bytes, content_type: str, entry: dict, headers: dict) -> None:
            auth = self.headers.get("Authorization", "")
            record = {"method": self.command, "path": self.path, "status": code,
                      "token": auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None, **entry}
            with lock:  # logged before the reply goes out: once the client has its answer, the log has the request
                log.write(json.dumps({**record, "t": time.time()}) + "\n")
                log.flush()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


class HubServerProcess:
    """The test Hub in a process of its own (as openai_server.ServerProcess): `requests()` is its log, `env()` the
    environment that points a `daig` subprocess's huggingface_hub at it."""

    def __init__(self, folder, refuse: tuple[str, ...] = ()):
        from pathlib import Path

        folder = Path(folder)
        self.log, port_file = folder / "hub_log.jsonl", folder / f"hub_port.{time.time_ns()}"
        self.proc = subprocess.Popen([sys.executable, __file__, "--port-file", str(port_file), "--log", str(self.log),
                                      *[a for r in refuse for a in ("--refuse", r)]])
        deadline = time.time() + 30
        while not port_file.exists():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the loopback Hub server did not start")
            time.sleep(0.02)
        self.base_url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def env(self, token: str = FAKE_TOKEN) -> dict:
        """For a `daig` subprocess pushing here: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when imported
        (and conftest sets HF_HUB_OFFLINE=1 for the test process), hence a subprocess with these set."""
        return {**os.environ, "HF_ENDPOINT": self.base_url, "HF_TOKEN": token, "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}

    def daig(self, *args: str, prelude: str = "") -> subprocess.CompletedProcess:
        """`python -m loop.cli ARGS` in a fresh interpreter pushing here. prelude: Python run first in that interpreter
        (e.g. a test's packaged-model entry, which a monkeypatch in the test process cannot reach), then the CLI."""
        cli = ["-c", f"{prelude}\nimport runpy\nrunpy.run_module('loop.cli', run_name='__main__', alter_sys=True)"] if prelude \
            else ["-m", "loop.cli"]
        return subprocess.run([sys.executable, *cli, *args], env=self.env(), cwd=REPO, capture_output=True, text=True, timeout=600)

    def requests(self) -> list[dict]:
        return read_log(self.log) if self.log.exists() else []

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":  # the server in its own process: python tests/hub_server.py --port-file F --log L [--refuse ID]
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True, help="where to write the port once listening")
    ap.add_argument("--log", required=True)
    ap.add_argument("--refuse", action="append", default=[], help="a repo id answered 401, as for a bad token")
    a = ap.parse_args()
    server = make_server(a.port, a.log, set(a.refuse))
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(a.port_file + ".tmp", a.port_file)
    server.serve_forever()
