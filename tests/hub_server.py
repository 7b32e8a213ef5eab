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

REPO_PATH = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)")
FAKE_TOKEN = "hf_" + "loopbacktesttoken" * 2  # shaped like a user token (hf_ and 34 letters); only ever sent here
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # how the Hub spells a repo's URL per type


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

        def _reply(self, code: int, obj: dict, entry: dict) -> None:
            auth = self.headers.get("Authorization", "")
            record = {"method": self.command, "path": self.path, "status": code,
                      "token": auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None, **entry}
            with lock:  # logged before the reply goes out: once the client has its answer, the log has the request
                log.write(json.dumps({**record, "t": time.time()}) + "\n")
                log.flush()
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
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
