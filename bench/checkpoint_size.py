"""Checkpoint size and write time with a 50 MB corpus: the JSON checkpoint against the pickle it replaced.

Run: python bench/checkpoint_size.py [--mb 50] [--rounds 3] [--rows 16]

The state is a DAIG run's after `--rounds` rounds of `--rows` kept rows each, on a synthetic corpus of `--mb` MB
(seeded random words in Markdown pages). Baseline: the previous checkpoint, one pickle of the whole LoopState
(rows and chunks included), written the same atomic way. Both are written 5 times; the median is printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.data.corpus import load_corpus  # noqa: E402
from generation.data.pool import build_pool, load_pool  # noqa: E402
from loop.runfolder import LoopState, save_checkpoint, write_atomic  # noqa: E402
from loop.config import load_config  # noqa: E402
from loop.methods import start_method  # noqa: E402


def corpus(folder: Path, mb: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = [f"w{i}" + "x" * rng.randint(0, 6) for i in range(20000)]
    for page in range(mb):  # one ~1 MB page per MB
        words, size = [], 0
        while size < 1_000_000:
            w = rng.choice(vocab)
            words.append(w)
            size += len(w) + 1
        (folder / f"page{page:03d}.md").write_text(f"# Page {page}\n\n" + " ".join(words), encoding="utf-8")


def median_seconds(fn, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=16)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "docs").mkdir()
        corpus(tmp / "docs", a.mb)
        g = load_config(None, [f"generation.domain_path={tmp / 'docs'}"]).generation
        t = time.perf_counter()
        chunks = load_corpus(str(tmp / "docs"), g.chunk_words)
        print(f"corpus: {a.mb} MB, {len(chunks)} chunks, loaded in {time.perf_counter() - t:.1f} s")
        pool = build_pool(load_pool(g.general_pool, "general"), load_pool(g.domain_pool, "domain"), g.tasks)
        st = LoopState(method=start_method(g, pool, chunks, "", 1), rng=random.Random(0).getstate())
        rng, rounds_rows = random.Random(1), []
        for r in range(1, a.rounds + 1):  # kept rows shaped like DAIG's, each carrying its chunk as context
            rows = []
            for i in range(a.rows):
                c = rng.choice(chunks)
                rows.append({"id": f"r{r}-{i:05d}", "round": r, "task": "question_answering", "instruction": f"What does {c.id} say?",
                             "input": "", "output": c.text[:400], "context": c.text, "provenance": {"chunk_id": c.id}, "split": "train"})
                st.method.novelty.add([rows[-1]["instruction"]])
                st.method.chunk_counts[c.id] = st.method.chunk_counts.get(c.id, 0) + 1
            rounds_rows.append(rows)
        st.round, st.rounds_with_rows, st.weights = a.rounds + 1, a.rounds, {t: 1 / len(pool) for t in pool}
        out = tmp / "run"
        out.mkdir()
        json_s = median_seconds(lambda: save_checkpoint(out, st))
        old = dataclasses.replace(st, method=dataclasses.replace(st.method, embedder=None))
        pickle_s = median_seconds(lambda: write_atomic(out / "checkpoint.pkl", pickle.dumps((old, rounds_rows))))  # the old state held every round's rows
        json_b, pickle_b = (out / "checkpoint.json").stat().st_size, (out / "checkpoint.pkl").stat().st_size
        print(f"{'checkpoint':<28}{'bytes':>12}{'write s':>10}")
        print(f"{'pickle of the state (before)':<28}{pickle_b:>12,}{pickle_s:>10.3f}")
        print(f"{'checkpoint.json (now)':<28}{json_b:>12,}{json_s:>10.3f}")
        print(f"ratio: {pickle_b / json_b:.0f}x smaller, {pickle_s / json_s:.1f}x faster to write")


if __name__ == "__main__":
    main()
