"""A DAIG round at scale against a loopback server: wall time and peak RSS against the round size.

    python bench/teacher_scale.py                         # rounds of 1,000, 10,000 and 50,000 instructions (100,000 requests)
    python bench/teacher_scale.py --sizes 2000 --latency 0.05 --concurrency 64

Each size runs in a process of its own (so its peak RSS is its own), against bench/teacher_throughput.py's server
in another process, answering every request after `latency` as tests/openai_server.py would (DAIG's parsers and
filters read its replies), overlapped stages on, novelty filter off (every instruction gets its answer), the rows
written to disk a window at a time as a run writes them (loop/controller.py generate_to_disk). Baseline:
the ideal rate, concurrency / latency. Printed per size: requests, wall, rate against the ideal, peak RSS, and the
RSS growth per request between the smallest and each larger size.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one_round(n: int, latency: float, concurrency: int) -> dict:
    from bench.teacher_throughput import start_server
    from generation.config import DaigConfig, GenerationConfig, NoveltyConfig
    from generation.data.corpus import Chunk
    from generation.data.pool import build_pool, load_pool
    from generation.methods.daig import plan_requests, run_daig_round
    from generation.teacher.backends import OpenAITeacher
    from generation.teacher.cache import Budget, CachedTeacher
    from loop.runfolder import RowWriter

    chunks = [Chunk(f"manual.md#{i}", "manual.md", f"Zone {i} of the Ferncast controller waters for {i % 50 + 5} minutes. "
                    f"Its valve {i} closes when the rain sensor trips, and the pump relay waits {i % 7 + 2} seconds.") for i in range(500)]
    cfg = GenerationConfig(domain_path="x", daig=DaigConfig(examples_per_round=n), novelty=NoveltyConfig(filter="none"))
    pool = build_pool(load_pool("builtin", "general"), [], [])
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    proc, url = start_server(latency, daig=True)
    try:
        teacher = CachedTeacher(OpenAITeacher("bench", url, "", concurrency, timeout_s=60, max_retries=0), None, Budget())
        start = time.perf_counter()
        plan = plan_requests({t: 1 / len(pool) for t in pool}, pool, chunks, cfg, random.Random(0))
        with tempfile.TemporaryDirectory() as out:  # the rows go to disk as the run writes them: a window at a time
            data, rejects = RowWriter(Path(out) / "data.jsonl"), RowWriter(Path(out) / "rejected.jsonl")
            run_daig_round(teacher, plan, cfg, round_idx=1, seed=0, emit=lambda k, r: (data.write(k), rejects.write(r)))
            data.commit()
            rejects.commit()
        wall = time.perf_counter() - start
    finally:
        proc.kill()
    return {"instructions": n, "requests": teacher.ledger.calls, "kept": data.rows, "rejected": rejects.rows, "wall_s": wall,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "start_rss_mb": start_rss / 1024}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 50000], help="instructions per round")
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.one:
        print(json.dumps(one_round(args.one, args.latency, args.concurrency)))
        return
    ideal = args.concurrency / args.latency
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; the server shares them")
    print(f"latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}: ideal {ideal:.0f} requests/s")
    first = None
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--latency", str(args.latency), "--concurrency",
                              str(args.concurrency)], capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        rate = m["requests"] / m["wall_s"]
        growth = "" if first is None else \
            f"  +{(m['peak_rss_mb'] - first['peak_rss_mb']) * 1024 / (m['requests'] - first['requests']):.2f} KB/request over {first['requests']:,}"
        print(f"  {m['requests']:>7,} requests ({m['kept']:,} rows kept): {m['wall_s']:7.1f} s  {rate:6.0f} req/s  {rate / ideal:6.1%} of ideal  "
              f"peak RSS {m['peak_rss_mb']:6.0f} MB (imports {m['start_rss_mb']:.0f} MB){growth}")
        first = first or m


if __name__ == "__main__":
    main()
