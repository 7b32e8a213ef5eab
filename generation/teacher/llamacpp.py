"""Serve a GGUF file with llama.cpp's OpenAI-compatible server on 127.0.0.1 for the run's lifetime.

Runs on xllamacpp (a prebuilt 34 MB wheel, a project dependency; no build).
The server runs in a child process, so its native threads and memory go away with stop() and a crash there
cannot take the run down. The child is this module:

    python -m generation.teacher.llamacpp --model model.gguf --alias NAME --port 8080 --threads 2 --n-ctx 4096 --n-parallel 2

It serves n_parallel slots (continuous batching); each slot holds n_ctx tokens, so the KV cache is
n_ctx * n_parallel. It exits when its parent does.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from generation.teacher.backends import TeacherError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'daig-loop[llamacpp]' (xllamacpp, a prebuilt wheel; the [offline] extra has it too)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """A llama.cpp server child process; `base_url` is its OpenAI-compatible endpoint, `stop()` ends it."""

    def __init__(self, gguf: str, alias: str, n_threads: int, n_ctx: int = 4096, startup_timeout_s: float = 300.0,
                 n_parallel: int = 2):
        if importlib.util.find_spec("xllamacpp") is None:
            raise TeacherError(f"generation.teacher.backend=llamacpp needs xllamacpp: {INSTALL_HINT}")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log_file = tempfile.NamedTemporaryFile(prefix="llamacpp-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "generation.teacher.llamacpp", "--model", gguf, "--alias", alias, "--port", str(port),
               "--threads", str(n_threads), "--n-ctx", str(n_ctx), "--n-parallel", str(n_parallel)]
        log.info("starting llama.cpp server for %s on %s: %d slots, %d threads (log: %s)",
                 alias, self.base_url, n_parallel, n_threads, self.log_file.name)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT)
        self._wait_healthy(startup_timeout_s)

    def _wait_healthy(self, timeout_s: float) -> None:
        health = self.base_url.removesuffix("/v1") + "/health"  # 503 while the model loads, 200 once it serves
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise TeacherError(f"llama.cpp server exited with code {self.proc.returncode} while starting; "
                                   f"see {self.log_file.name}")
            try:
                with urllib.request.urlopen(health, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:  # refused, 503 (HTTPError) or a timeout: not ready yet
                pass
            time.sleep(0.25)
        self.stop()
        raise TeacherError(f"llama.cpp server not healthy after {timeout_s:.0f} s; see {self.log_file.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve(model: str, alias: str, port: int, threads: int, n_ctx: int, n_parallel: int) -> None:
    """Run the server in this process until SIGTERM/SIGINT or until the parent process is gone."""
    import xllamacpp as xl

    p = xl.CommonParams()
    p.model.path = model
    p.model_alias = {alias}  # what /v1/models lists; the model field of a request is not checked
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_parallel = n_parallel
    p.n_ctx = n_ctx * n_parallel  # the KV cache is split evenly across the slots
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.ui = False
    parent = os.getppid()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server = xl.Server(p)  # returns once the model is loaded and the HTTP server listens
    print(f"daig: serving {alias} at {server.listening_address}", flush=True)
    while not done.wait(1.0) and os.getppid() == parent:
        pass
    sys.stdout.flush()
    os._exit(0)  # the process ends the native threads; no orderly teardown to wait on


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m generation.teacher.llamacpp", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="path of the GGUF file")
    ap.add_argument("--alias", required=True, help="model name listed by /v1/models")
    ap.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for prompt and generation")
    ap.add_argument("--n-ctx", type=int, default=4096, help="context tokens per slot")
    ap.add_argument("--n-parallel", type=int, default=2, help="slots: requests decoded together")
    args = ap.parse_args(argv)
    serve(args.model, args.alias, args.port, args.threads, args.n_ctx, args.n_parallel)


if __name__ == "__main__":
    main()
