"""A loopback HTTP server speaking the OpenAI chat-completions protocol: the one allowed fake, at the
network edge, to test our client's handling of real HTTP (errors, garbage bodies, concurrency).

Replies are derived from the prompt so the loop gets usable rows: an instruction request ("Write one
new ... task") gets a question about a word of the passage; an answer request gets the passage's first
sentence. `faults` is a queue of injected failures served before normal replies: 500, 429 (with
Retry-After), 401, timeout (stalls slow_s), drop (closes the connection), garbage, empty, length.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client killed mid-reply is a test's point, not an error
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def body_key(body: dict) -> str:
    """One id per distinct request body: the same prompt and parameters sent twice is a duplicate payment."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def read_log(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class FakeOpenAI:
    def __init__(self, faults: list[str] | None = None, port: int = 0, log_path: str = "", fault_rate: float = 0.0, seed: int = 0):
        """port: 0 picks a free one. log_path: append one JSON line per request received and per reply written
        (the count at the edge, kept by this server, whichever process runs it). fault_rate: that share of requests
        gets a 429 or a 500 (half each), drawn from a seeded generator."""
        self.faults = list(faults or [])
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.fault_rate, self.rng = fault_rate, random.Random(seed)
        self.latency_s = 0.0  # added before every reply
        self.slow_s = 2.0  # how long a "timeout" fault stalls before answering
        self.requests: list[dict] = []
        self.answered: list[dict] = []  # bodies whose full reply was written back
        self.before_reply = None  # test hook (request number, body) -> True to drop the request unanswered, or a fault name
        self.auth_headers: list[str] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "fake-teacher", "object": "model", "owned_by": "test"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with owner.lock:
                    owner.requests.append(body)
                    owner.auth_headers.append(self.headers.get("Authorization", ""))
                    fault = owner.faults.pop(0) if owner.faults else ""
                    if not fault and owner.fault_rate and owner.rng.random() < owner.fault_rate:
                        fault = owner.rng.choice(["429", "500"])
                    number = len(owner.requests)
                    owner._log({"e": "received", "n": number, "key": body_key(body), "fault": fault})
                if owner.latency_s:
                    time.sleep(owner.latency_s)
                verdict = owner.before_reply(number, body) if owner.before_reply else None
                if verdict is True:  # the hook asked to drop this request unanswered
                    self.close_connection = True
                    return
                if isinstance(verdict, str):  # the hook named a fault to serve instead
                    fault = verdict
                if fault == "500":
                    return self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
                if fault == "429":
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": "0.2"})
                if fault == "401":
                    return self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
                if fault == "timeout":
                    time.sleep(owner.slow_s)
                if fault == "drop":
                    self.close_connection = True
                    return self.connection.shutdown(socket.SHUT_RDWR)
                if fault == "garbage":
                    return self._send_raw(200, b"this is not json{")
                if fault == "empty":
                    return self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                if fault == "length":
                    return self._send(200, owner.completion(body, "truncated answer", "length"))
                self._send(200, owner.completion(body, owner.reply_text(body), "stop"))
                with owner.lock:
                    owner.answered.append(body)
                    owner._log({"e": "answered", "n": number, "key": body_key(body)})

            def _send(self, code, obj, headers=None):
                self._send_raw(code, json.dumps(obj).encode(), headers)

            def _send_raw(self, code, data: bytes, headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietServer(("127.0.0.1", port), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def reply_text(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("Grade a student's answer"):  # the test-set judge: right when the answer shares a word with the reference
            reference = prompt.split("Reference answer:\n")[1].split("\n\nStudent answer:")[0].lower()
            student = prompt.split("Student answer:\n")[1].split("\n\nReply with")[0].lower()
            shared = set(re.findall(r"[a-z]{4,}", reference)) & set(re.findall(r"[a-z]{4,}", student))
            return "CORRECT" if shared else "Verdict: WRONG"
        passage = prompt.split('"""')[1].strip() if prompt.count('"""') >= 2 else prompt
        if "Write one new" in prompt:
            words = [w for w in re.findall(r"[A-Za-z][A-Za-z-]{4,}", passage)]
            word = words[len(prompt) % len(words)] if words else "topic"
            if "new classification task" in prompt:  # a classification task names its classes
                a, b = (words[(len(prompt) + k) % len(words)].lower() for k in (1, 2)) if words else ("one", "other")
                task = f"Classify {word.lower()} as {a} or {b}."
            else:
                task = f"What does the passage say about {word.lower()} and why does it matter?"
            if (body.get("response_format") or {}).get("type") == "json_object":  # JSON mode, as vLLM and OpenAI honour it
                return json.dumps({"instruction": task, "input": ""})
            return f"Task: {task}"
        return re.split(r"(?<=[.!?])\s", passage)[0]

    @staticmethod
    def completion(body: dict, text: str, finish: str) -> dict:
        prompt_tokens = sum(len(m["content"].split()) for m in body.get("messages", []))
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                          "total_tokens": prompt_tokens + len(text.split())}}

    def _log(self, event: dict) -> None:
        if self.log is not None:
            self.log.write(json.dumps({**event, "t": time.time()}) + "\n")
            self.log.flush()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class ServerProcess:
    """FakeOpenAI in a process of its own, so what it counts is counted at the edge, apart from the client's
    process (which a test may kill). `log` is its record: read_log(server.log)."""

    def __init__(self, folder, fault_rate: float = 0.0, latency_s: float = 0.0, port: int = 0, seed: int = 0):
        import subprocess
        from pathlib import Path

        folder = Path(folder)
        self.log, port_file = folder / "server_log.jsonl", folder / f"server_port.{time.time_ns()}"
        self.proc = subprocess.Popen([sys.executable, __file__, "--port", str(port), "--port-file", str(port_file), "--log", str(self.log),
                                      "--fault-rate", str(fault_rate), "--latency", str(latency_s), "--seed", str(seed)])
        deadline = time.time() + 30
        while not port_file.exists():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def events(self, kind: str) -> list[dict]:
        return [e for e in read_log(self.log) if e["e"] == kind] if self.log.exists() else []

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


if __name__ == "__main__":  # the server in its own process: python tests/openai_server.py --port-file F --log L
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True, help="where to write the port once listening")
    ap.add_argument("--log", required=True)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    server = FakeOpenAI(port=a.port, log_path=a.log, fault_rate=a.fault_rate, seed=a.seed)
    server.latency_s = a.latency
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server.server_address[1]))
    import os
    os.replace(tmp, a.port_file)
    sys.stdout.flush()
    server.server.serve_forever()
