"""A loopback HTTP server speaking the OpenAI chat-completions protocol: the one allowed fake, at the
network edge, to test our client's handling of real HTTP (errors, garbage bodies, concurrency).

Replies are derived from the prompt so the loop gets usable rows: an instruction request ("Write one
new ... task") gets a question about a word of the passage; an answer request gets the passage's first
sentence. `faults` is a queue of injected failures served before normal replies: 500, 429 (with
Retry-After), 401, timeout (stalls slow_s), drop (closes the connection), garbage, empty, length.

It also speaks the Files and Batch APIs (upload, batch create / retrieve / list / cancel, file content), in memory:
a batch finishes at the first poll batch_delay_s after creation, its lines answered as the chat endpoint would;
batch_fail_items, batch_expire_items and batch_status_fault inject failed lines, expired lines, a failed batch.
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
from urllib.parse import urlsplit


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client killed mid-reply is a test's point, not an error
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def body_key(body: dict) -> str:
    """One id per distinct request body: the same prompt and parameters sent twice is a duplicate payment."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def parse_multipart(content_type: str, data: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data -> {field name: (filename, bytes)}. Split by hand on the boundary so a file's bytes come
    back exactly as sent (the email parser would decode and rewrite them)."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    fields = {}
    for part in data.split(b"--" + boundary[1].encode())[1:-1] if boundary else []:
        head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        head_text = head.decode("utf-8", "replace")
        name, filename = re.search(r'[; ]name="([^"]*)"', head_text), re.search(r'filename="([^"]*)"', head_text)
        if name:
            fields[name[1]] = (filename[1] if filename else None, value.removesuffix(b"\r\n"))
    return fields


def parse_batch_input(data: bytes) -> tuple[list[dict], int | None]:
    """The batch input's request lines, and the number of its first invalid line (None when all are valid): one
    that is not JSON, or lacks a custom_id or a chat body, would crash the reply code, so it fails the batch."""
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return rows, number
        body = row.get("body") if isinstance(row, dict) else None
        if not isinstance(body, dict) or "custom_id" not in row or not isinstance(body.get("messages"), list):
            return rows, number
        rows.append(row)
    return rows, None


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
        self.files: dict[str, dict] = {}  # id -> FileObject
        self.file_data: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}  # id -> Batch object, as retrieve returns it
        self.batch_started: dict[str, float] = {}
        self.batch_lines_done = 0  # numbers the batch_req_<k> output lines
        self.batch_delay_s = 0.3  # a batch finishes at the first poll this long after its creation
        self.batch_fail_items = 0  # that many first lines get a 500, in the error file (spent as they fail)
        self.batch_expire_items = 0  # the next batch leaves that many last lines unrun and ends "expired" (spent)
        self.batch_status_fault = ""  # "failed": the batch fails as a whole, no output
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                path = urlsplit(self.path).path.rstrip("/")
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "fake-teacher", "object": "model", "owned_by": "test"}]})
                elif m := re.search(r"/files/([^/]+)/content$", path):
                    code, data = owner.file_content(m[1])
                    if code != 200:
                        return self._send(code, data)
                    self._send_raw(code, data, content_type="application/octet-stream")  # raw bytes, as OpenAI serves them
                elif m := re.search(r"/files/([^/]+)$", path):
                    self._send(*owner.file_info(m[1]))
                elif m := re.search(r"/batches/([^/]+)$", path):
                    self._send(*owner.poll_batch(m[1]))
                elif path.endswith("/batches"):
                    self._send(*owner.list_batches())
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                path = urlsplit(self.path).path.rstrip("/")
                if path.endswith("/files"):  # multipart, not JSON
                    return self._send(*owner.upload_file(self.headers.get("Content-Type", ""), self._read()))
                if m := re.search(r"/batches(?:/([^/]+)/cancel)?$", path):
                    return self._send(*(owner.cancel_batch(m[1]) if m[1] else owner.create_batch(json.loads(self._read() or b"{}"))))
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
                # Counted before the write, so a client that has the reply always finds it counted; taken back if
                # the write fails (the client is gone).
                with owner.lock:
                    owner.answered.append(body)
                try:
                    self._send(200, owner.completion(body, owner.reply_text(body), "stop"))
                except OSError:
                    with owner.lock:
                        owner.answered.remove(body)
                    raise
                with owner.lock:
                    owner._log({"e": "answered", "n": number, "key": body_key(body)})

            def _read(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _send(self, code, obj, headers=None):
                self._send_raw(code, json.dumps(obj).encode(), headers)

            def _send_raw(self, code, data: bytes, headers=None, content_type="application/json"):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", content_type)
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

    # Files and Batch APIs. Each returns (HTTP status, reply) and logs one event; a missing id logs it with "error": 404.

    def _missing(self, event: dict, what: str) -> tuple[int, dict]:
        self._log({**event, "error": 404})
        return 404, {"error": {"message": f"No such {what}", "type": "invalid_request_error"}}

    def _add_file(self, data: bytes, filename: str, purpose: str) -> dict:
        """Store bytes as file-<n> (the caller holds the lock)."""
        file = {"id": f"file-{len(self.files) + 1}", "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file["id"]], self.file_data[file["id"]] = file, data
        return file

    def upload_file(self, content_type: str, data: bytes) -> tuple[int, dict]:
        fields = parse_multipart(content_type, data)
        if "file" not in fields:
            with self.lock:
                self._log({"e": "file_upload", "error": 400})
            return 400, {"error": {"message": "a multipart field 'file' is required", "type": "invalid_request_error"}}
        filename, content = fields["file"]
        purpose = fields.get("purpose", (None, b""))[1].decode()
        with self.lock:
            file = self._add_file(content, filename or "upload", purpose)
            self._log({"e": "file_upload", "file": file["id"], "bytes": len(content), "purpose": purpose})
        return 200, file

    def file_info(self, file_id: str) -> tuple[int, dict]:
        with self.lock:
            if file_id not in self.files:
                return self._missing({"e": "file_info", "file": file_id}, "file")
            self._log({"e": "file_info", "file": file_id})
            return 200, self.files[file_id]

    def file_content(self, file_id: str) -> tuple[int, bytes | dict]:
        with self.lock:
            if file_id not in self.file_data:
                return self._missing({"e": "file_download", "file": file_id}, "file")
            self._log({"e": "file_download", "file": file_id})
            return 200, self.file_data[file_id]

    def create_batch(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            file_id = body.get("input_file_id", "")
            if file_id not in self.file_data:
                return self._missing({"e": "batch_create", "file": file_id}, "input file")
            lines = sum(1 for line in self.file_data[file_id].splitlines() if line.strip())
            now = time.time()
            batch = {"id": f"batch_{len(self.batches) + 1}", "object": "batch", "endpoint": body.get("endpoint", ""),
                     "errors": None, "input_file_id": file_id, "completion_window": body.get("completion_window", "24h"),
                     "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": int(now),
                     "in_progress_at": None, "expires_at": int(now) + 86400, "finalizing_at": None, "completed_at": None,
                     "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                     "request_counts": {"total": lines, "completed": 0, "failed": 0}, "metadata": body.get("metadata")}
            self.batches[batch["id"]], self.batch_started[batch["id"]] = batch, now
            self._log({"e": "batch_create", "batch": batch["id"], "lines": lines, "file": file_id})
            return 200, dict(batch)  # a copy: the stored one changes while the reply is written

    def poll_batch(self, batch_id: str) -> tuple[int, dict]:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return self._missing({"e": "batch_poll", "batch": batch_id}, "batch")
            if batch["status"] in ("validating", "in_progress"):
                batch.update(status="in_progress", in_progress_at=batch["in_progress_at"] or int(time.time()))
                if time.time() - self.batch_started[batch_id] >= self.batch_delay_s:
                    self._finish_batch(batch)
            self._log({"e": "batch_poll", "batch": batch_id, "status": batch["status"]})
            return 200, dict(batch)

    def _finish_batch(self, batch: dict) -> None:
        """Run every line at once, as the chat endpoint would answer it (the caller holds the lock). Lines go to the
        output file, or to the error file when failed (batch_fail_items, first lines) or expired (batch_expire_items,
        last lines, never run); the knobs are read now, so a test may set them after creating the batch."""
        now = int(time.time())
        batch["finalizing_at"] = now
        rows, bad = parse_batch_input(self.file_data[batch["input_file_id"]])
        if self.batch_status_fault == "failed" or bad is not None:  # as OpenAI fails a batch whose input is invalid
            message = "fault injected: the batch failed" if bad is None else f"invalid input line {bad}"
            batch.update(status="failed", failed_at=now,
                         errors={"object": "list", "data": [{"code": "invalid_request", "message": message, "line": bad, "param": None}]})
            return
        run = len(rows) - min(self.batch_expire_items, len(rows))
        fail = min(self.batch_fail_items, run)
        # The knobs are spent by the lines they hit, so a batch of the lines sent again can succeed.
        self.batch_expire_items -= len(rows) - run
        self.batch_fail_items -= fail
        output, errors = [], []
        for i, row in enumerate(rows):
            self.batch_lines_done += 1
            line = {"id": f"batch_req_{self.batch_lines_done}", "custom_id": row["custom_id"], "response": None, "error": None}
            if i >= run:
                line["error"] = {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}
                errors.append(line)
                continue
            ok = i >= fail
            body = row["body"]
            reply = self.completion(body, self.reply_text(body), "stop") if ok else {"error": {"message": "server error"}}
            line["response"] = {"status_code": 200 if ok else 500, "request_id": f"req_{self.batch_lines_done}", "body": reply}
            (output if ok else errors).append(line)
            self._log({"e": "batch_item", "batch": batch["id"], "custom_id": row["custom_id"], "key": body_key(body),
                       "status_code": line["response"]["status_code"]})
        jsonl = lambda lines: "".join(json.dumps(x) + "\n" for x in lines).encode()
        if output:
            batch["output_file_id"] = self._add_file(jsonl(output), f"{batch['id']}_output.jsonl", "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._add_file(jsonl(errors), f"{batch['id']}_error.jsonl", "batch_output")["id"]
        batch["request_counts"] = {"total": len(rows), "completed": len(output), "failed": len(errors)}
        batch.update({"status": "expired", "expired_at": now} if run < len(rows) else {"status": "completed", "completed_at": now})

    def list_batches(self) -> tuple[int, dict]:
        """Every batch, newest first, on one page."""
        with self.lock:
            data = [dict(b) for b in reversed(self.batches.values())]
            self._log({"e": "batch_list", "n": len(data)})
            return 200, {"object": "list", "data": data, "has_more": False,
                         "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    def cancel_batch(self, batch_id: str) -> tuple[int, dict]:
        """A running batch is cancelled at once, none of its lines run; a finished one is left as it is."""
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return self._missing({"e": "batch_cancel", "batch": batch_id}, "batch")
            if batch["status"] in ("validating", "in_progress"):
                now = int(time.time())
                batch.update(status="cancelled", cancelling_at=now, cancelled_at=now)
            self._log({"e": "batch_cancel", "batch": batch_id, "status": batch["status"]})
            return 200, dict(batch)

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

    def __init__(self, folder, fault_rate: float = 0.0, latency_s: float = 0.0, port: int = 0, seed: int = 0,
                 batch_delay_s: float = 0.3, batch_fail_items: int = 0, batch_expire_items: int = 0, batch_status_fault: str = ""):
        import subprocess
        from pathlib import Path

        folder = Path(folder)
        self.log, port_file = folder / "server_log.jsonl", folder / f"server_port.{time.time_ns()}"
        self.proc = subprocess.Popen([sys.executable, __file__, "--port", str(port), "--port-file", str(port_file), "--log", str(self.log),
                                      "--fault-rate", str(fault_rate), "--latency", str(latency_s), "--seed", str(seed),
                                      "--batch-delay", str(batch_delay_s), "--batch-fail-items", str(batch_fail_items),
                                      "--batch-expire-items", str(batch_expire_items), "--batch-status-fault", batch_status_fault])
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
    ap.add_argument("--batch-delay", type=float, default=0.3)
    ap.add_argument("--batch-fail-items", type=int, default=0)
    ap.add_argument("--batch-expire-items", type=int, default=0)
    ap.add_argument("--batch-status-fault", default="", help='"failed": every batch fails as a whole')
    a = ap.parse_args()
    server = FakeOpenAI(port=a.port, log_path=a.log, fault_rate=a.fault_rate, seed=a.seed)
    server.latency_s = a.latency
    server.batch_delay_s, server.batch_fail_items = a.batch_delay, a.batch_fail_items
    server.batch_expire_items, server.batch_status_fault = a.batch_expire_items, a.batch_status_fault
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server.server_address[1]))
    import os
    os.replace(tmp, a.port_file)
    sys.stdout.flush()
    server.server.serve_forever()
