"""Teacher client throughput against a loopback OpenAI-protocol server with a fixed latency.

    python bench/teacher_throughput.py                     # 1 s x 64, 1 s x 256, 200 ms x 64 (latency x concurrency)
    python bench/teacher_throughput.py --case 0.5x64 --requests 256
    python bench/teacher_throughput.py --llamacpp qwen2.5-coder-0.5b-instruct   # + the real llama.cpp server

Then a two-stage DAIG round (instructions, then answers) against the same kind of server answering as
tests/openai_server.py does, stage by stage against overlapped (daig.overlap_stages), with the teacher-bound
minimum: ceil(requests / concurrency) x latency.

The server runs in a separate process and answers every request after exactly `latency` seconds: it
measures our client, not a model. Baselines in the same run: a sequential client (the same code with
max_concurrency=1, timed on a subsample and compared by rate) and the bare openai AsyncOpenAI client
with a semaphore. Ratios are printed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPLY = {"id": "b", "object": "chat.completion", "created": 0, "model": "bench",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "A short fixed answer."}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}


async def serve(port: int, latency: float, daig: bool = False) -> None:
    """A minimal HTTP/1.1 keep-alive server: every POST is answered after `latency` seconds, with a fixed reply, or
    (daig) with the reply the tests' loopback server derives from the prompt, which DAIG's parsers and filters read."""
    fixed = json.dumps(REPLY).encode()
    if daig:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from openai_server import FakeOpenAI

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in header.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
                request = await reader.readexactly(length)
                await asyncio.sleep(latency)
                if daig:
                    body = json.loads(request)
                    reply = json.dumps(FakeOpenAI.completion(body, FakeOpenAI.reply_text(body), "stop")).encode()
                else:
                    reply = fixed
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(reply) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float, daig: bool = False) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(latency)] + ["--daig-replies"] * daig)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("bench server did not start")


def ours(base_url: str, n: int, concurrency: int) -> tuple[float, float]:
    from generation.teacher.backends import OpenAITeacher, TeacherRequest

    teacher = OpenAITeacher("bench", base_url, "", concurrency, timeout_s=60, max_retries=0)
    reqs = [TeacherRequest((("user", f"request {i}"),), 16, 0.7, 0.9, i) for i in range(n)]
    wall, cpu = time.perf_counter(), time.process_time()
    replies = teacher.generate(reqs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert all(not r.error for r in replies), {r.error for r in replies}
    return wall, cpu


def bare(base_url: str, n: int, concurrency: int) -> tuple[float, float]:
    import openai

    async def run():
        sem = asyncio.Semaphore(concurrency)
        async with openai.AsyncOpenAI(api_key="x", base_url=base_url, max_retries=0) as client:
            async def one(i):
                async with sem:
                    await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": f"request {i}"}], max_tokens=16)
            await asyncio.gather(*(one(i) for i in range(n)))

    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run())
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(latency: float, n: int, concurrency: int, sequential_n: int) -> None:
    """One case: ours, the bare openai client and the sequential client against one server at `latency`."""
    proc, url = start_server(latency)
    try:
        ideal = concurrency / latency
        seq_wall, _ = ours(url, sequential_n, 1)
        seq_rate = sequential_n / seq_wall
        bare_wall, bare_cpu = bare(url, n, concurrency)
        our_wall, our_cpu = ours(url, n, concurrency)
        rate, bare_rate = n / our_wall, n / bare_wall
        print(f"\nlatency {latency * 1000:.0f} ms, {n} requests, concurrency {concurrency} (ideal {ideal:.1f} req/s)")
        print(f"  ours:       {rate:7.1f} req/s  {rate / ideal:6.1%} of ideal  {our_cpu / n * 1000:.2f} ms client CPU/request")
        print(f"  bare openai:{bare_rate:7.1f} req/s  {bare_rate / ideal:6.1%} of ideal  {bare_cpu / n * 1000:.2f} ms client CPU/request")
        print(f"  sequential: {seq_rate:7.2f} req/s  (same client, concurrency 1, {sequential_n} requests)")
        print(f"  ratio ours/sequential: {rate / seq_rate:.1f}x   ours/bare: {rate / bare_rate:.2f}x")
    finally:
        proc.kill()


def two_stage(latency: float, n: int, concurrency: int) -> None:
    """A DAIG round of n instructions and their answers, stage by stage vs overlapped, on one server; rows compared."""
    import math
    import random as rnd

    from generation.config import DaigConfig, GenerationConfig, NoveltyConfig
    from generation.data.corpus import Chunk
    from generation.data.pool import build_pool, load_pool
    from generation.methods.daig import plan_requests, run_daig_round
    from generation.teacher.backends import OpenAITeacher
    from generation.teacher.cache import Budget, CachedTeacher

    chunks = [Chunk(f"manual.md#{i}", "manual.md", f"Zone {i} of the Ferncast controller waters for {i + 5} minutes. "
                    f"Its valve {i} closes when the rain sensor trips, and the pump relay waits {i + 2} seconds.") for i in range(12)]
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=n), novelty=NoveltyConfig(filter="none"))
    pool = build_pool(load_pool("builtin", "general"), [], [])
    plan = plan_requests({t: 1 / len(pool) for t in pool}, pool, chunks, cfg, rnd.Random(0))
    proc, url = start_server(latency, daig=True)
    try:
        walls, rows = {}, {}
        for overlap in (False, True):
            cfg.daig.overlap_stages = overlap
            teacher = CachedTeacher(OpenAITeacher("bench", url, "", concurrency, timeout_s=60, max_retries=0), None, Budget())
            start = time.perf_counter()
            kept, rejected, _ = run_daig_round(teacher, plan, cfg, round_idx=1, seed=0)
            walls[overlap], rows[overlap] = time.perf_counter() - start, (kept, rejected)
            calls = teacher.ledger.calls
        assert rows[True] == rows[False], "overlapped rows differ"
        ideal = max(math.ceil(calls / concurrency), 2) * latency
        print(f"\ntwo-stage DAIG round, latency {latency * 1000:.0f} ms, concurrency {concurrency}: {n} instructions + "
              f"{calls - n} answers ({len(rows[True][0])} rows kept, identical both ways)")
        print(f"  teacher-bound minimum: {ideal:6.2f} s  (ceil({calls} / {concurrency}) x latency)")
        print(f"  stage by stage:        {walls[False]:6.2f} s  {ideal / walls[False]:6.1%} of the minimum")
        print(f"  overlapped:            {walls[True]:6.2f} s  {ideal / walls[True]:6.1%} of the minimum")
        print(f"  ratio stage-by-stage / overlapped: {walls[False] / walls[True]:.2f}x")
    finally:
        proc.kill()


def llamacpp(model: str, n: int, concurrency: int, threads: int) -> None:
    """Real llama.cpp server with a packaged GGUF: completion tokens/s, sequential vs concurrent."""
    from generation.teacher.llamacpp import LlamaCppServer
    from generation.teacher.backends import OpenAITeacher, TeacherRequest
    from loop.models import gguf_path

    server = LlamaCppServer(gguf_path(model, "~/.cache/daig"), model, threads, 2048, n_parallel=concurrency)
    try:
        reqs = [TeacherRequest((("user", f"Write two sentences about irrigation zone {i}."),), 64, 0.7, 0.9, i) for i in range(n)]
        print(f"\nllama.cpp server, {model}, {threads} threads, {n} requests x 64 max tokens")
        rates = {}
        for c in (1, concurrency):
            teacher = OpenAITeacher(model, server.base_url, "", c, timeout_s=600, max_retries=0)
            start = time.perf_counter()
            replies = teacher.generate(reqs)
            wall = time.perf_counter() - start
            tokens = sum(r.completion_tokens for r in replies)
            rates[c] = tokens / wall
            print(f"  concurrency {c:3d}: {tokens / wall:6.1f} completion tokens/s  ({n / wall:.2f} req/s, {wall:.1f} s)")
        print(f"  ratio concurrency {concurrency}/sequential: {rates[concurrency] / rates[1]:.2f}x")
    finally:
        server.stop()
    from generation.teacher.backends import LocalTeacher
    from loop.models import resolve_model

    local = LocalTeacher(resolve_model(model, "~/.cache/daig"), model, batch_size=16, num_threads=threads)
    local.generate(reqs[:1])  # load outside the timing
    start = time.perf_counter()
    replies = local.generate(reqs)
    wall = time.perf_counter() - start
    tokens = sum(r.completion_tokens for r in replies)
    print(f"  baseline, local transformers backend (batch 16): {tokens / wall:6.1f} completion tokens/s  ({wall:.1f} s)")
    print(f"  ratio llama.cpp sequential / local batched: {rates[1] / (tokens / wall):.2f}x")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", nargs="*", default=["1x64", "1x256", "0.2x64"], help="LATENCYxCONCURRENCY (seconds x requests in flight)")
    p.add_argument("--requests", type=int, default=0, help="requests per case (0: 16 x concurrency)")
    p.add_argument("--latency", type=float, default=1.0, help=argparse.SUPPRESS)  # the server process's latency
    p.add_argument("--sequential", type=int, default=16, help="requests for the sequential baseline (compared by rate)")
    p.add_argument("--llamacpp", metavar="MODEL", help="also bench the real llama.cpp server with this packaged model (xllamacpp)")
    p.add_argument("--llamacpp-requests", type=int, default=16)
    p.add_argument("--two-stage", default="0.5x16x24", help="LATENCYxCONCURRENCYxINSTRUCTIONS of the two-stage round ('' to skip)")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--daig-replies", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.latency, args.daig_replies))
        return
    os.environ.setdefault("TQDM_DISABLE", "1")  # per-request bar updates would add to the client CPU we measure
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; the server shares them")
    for case in args.case:
        latency, concurrency = float(case.split("x")[0]), int(case.split("x")[1])
        bench(latency, args.requests or 16 * concurrency, concurrency, args.sequential)
    if args.two_stage:
        latency, concurrency, n = args.two_stage.split("x")
        two_stage(float(latency), int(n), int(concurrency))
    if args.llamacpp:
        llamacpp(args.llamacpp, args.llamacpp_requests, 4, 2)


if __name__ == "__main__":
    main()
