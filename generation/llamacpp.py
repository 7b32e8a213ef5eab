"""Serve a GGUF file with llama.cpp's OpenAI-compatible server on 127.0.0.1 for the run's lifetime.

Needs the optional extra: pip install 'daig-loop[llamacpp]' (llama-cpp-python builds from source,
about 9 minutes on 2 cores). It is the fast way to run the packaged GGUF teachers on a CPU.
"""
from __future__ import annotations

import importlib.util
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from generation.teachers import TeacherError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    def __init__(self, gguf: str, alias: str, n_threads: int, n_ctx: int = 4096, startup_timeout_s: float = 300.0):
        if importlib.util.find_spec("llama_cpp") is None:
            raise TeacherError("generation.teacher.backend=llamacpp needs llama-cpp-python: pip install 'daig-loop[llamacpp]' "
                               "(a source build, about 9 minutes on 2 cores)")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log_file = tempfile.NamedTemporaryFile(prefix="llamacpp-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", alias, "--host", "127.0.0.1",
               "--port", str(port), "--n_threads", str(n_threads), "--n_ctx", str(n_ctx),
               # Its default lets each new request interrupt the one running: with concurrency > 1 that halved
               # throughput here (27 -> 13 tokens/s). Queue them instead.
               "--interrupt_requests", "False"]
        log.info("starting llama.cpp server for %s on %s (log: %s)", alias, self.base_url, self.log_file.name)
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.time() + startup_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise TeacherError(f"llama.cpp server exited with code {self.proc.returncode}; see {self.log_file.name}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TeacherError(f"llama.cpp server not healthy after {startup_timeout_s:.0f} s; see {self.log_file.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
