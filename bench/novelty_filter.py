"""ROUGE-L novelty filter: ours vs the Alpaca reference loop, on one stream of candidate instructions.

    .venv/bin/python bench/novelty_filter.py                                # 5,000 kept; reference on a prefix + samples
    .venv/bin/python bench/novelty_filter.py --kept 50000 --skip-reference  # ours only (+ sampled exact check)

The stream is built from the 175 Self-Instruct seed tasks (tests/data/self_instruct_seed_tasks.jsonl):
fragments of two seeds joined, seeds with words replaced by words of the seed answers, seed starts plus
a phrase, near-duplicates of earlier candidates (a word dropped or two swapped, so rejections happen) and
a few texts without a-z0-9 tokens. It is generated until our filter has kept --kept texts beyond the seeds.

Ours is timed in three passes over the same candidates, each with a fresh filter (only filter calls are
timed): check_and_add (decision + exact best: what the strict filter needs), check + add (also the
exact top-10, as the reference records) and with_mean=True (also the exact mean over the pool).

The reference is the loop of tatsu-lab/stanford_alpaca generate_instruction.py (reference_check below,
same calls): per candidate, rouge_score's _score_lcs against every pool text in a new
multiprocessing Pool(num_cpus), top-10 by np.argsort, reject if max > 0.7, else np.mean and add to the
pool. At 5,000 kept it would run for tens of minutes, so it runs (1) sequentially on the first
--ref-prefix candidates, with its own pool, and (2) on --ref-samples candidates spread over the whole
stream, each against the pool our run had at that point (seeds + texts kept before it). Its total is
EXTRAPOLATED from a least-squares fit of seconds per candidate vs pool size over those runs. An
all-pairs exact check (rouge_score's tokenizer, an LCS for every pair in C, rouge_score's
scoring.fmeasure) compares every decision, best score, top-10 and mean of the stream (every k-th
candidate with --check-every k).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Iterator

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer, scoring

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generation.filters.novelty import NoveltyFilter, tokenize  # noqa: E402

SEEDS = Path(__file__).resolve().parents[1] / "tests" / "data" / "self_instruct_seed_tasks.jsonl"
PHRASES = ["Explain your answer.", "Answer in one sentence.", "Give three examples.", "Use simple words.",
           "for a ten-year-old", "in a formal tone", "as a numbered list", "in under 50 words", "step by step",
           "and justify each choice", "with a short example", "without using jargon"]
NO_TOKEN_TEXTS = ["写一首关于秋天的诗。", "¿¡…?!", "", "Ω≈ç√∫"]


def load_seeds(path: Path) -> tuple[list[str], list[str]]:
    """Seed instructions, and the words of the seed answers/inputs (drawn by frequency for replacements)."""
    tasks = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    words = [w for t in tasks for inst in t["instances"] for w in f"{inst['input']} {inst['output']}".split()]
    return [t["instruction"] for t in tasks], words


def candidate_stream(seeds: list[str], words: list[str], seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    made: list[str] = []
    while True:
        a, r = rng.choice(seeds).split(), rng.random()
        if r < 0.004:
            text = rng.choice(NO_TOKEN_TEXTS)
        elif r < 0.12 and made:  # near-duplicate of a recent candidate
            w = rng.choice(made[-2000:]).split() or ["x"]
            i = rng.randrange(len(w))
            if len(w) > 4 and rng.random() < 0.5:
                del w[i]
            elif i + 1 < len(w):
                w[i], w[i + 1] = w[i + 1], w[i]
            text = " ".join(w)
        elif r < 0.55:  # fragments of two seeds plus a few words
            b = rng.choice(seeds).split()
            w = a[:rng.randint(1, len(a))] + b[rng.randint(0, len(b) - 1):]
            for _ in range(rng.randint(2, 4)):
                w.insert(rng.randint(0, len(w)), rng.choice(words))
            text = " ".join(w)
        elif r < 0.85:  # a seed with about half of its words replaced
            text = " ".join(x if rng.random() > 0.5 else rng.choice(words) for x in a)
        else:  # the start of a seed, a phrase and a topic
            text = " ".join(a[:max(2, len(a) // 2)] + rng.choice(PHRASES).split() + ["about"]
                            + [rng.choice(words) for _ in range(3)])
        made.append(text)
        yield text


def reference_check(new_instruction: str, all_instructions: list[str], all_instruction_tokens: list[list[str]],
                    scorer, num_cpus: int) -> tuple[bool, list, dict, float | None]:
    """The body of stanford_alpaca generate_instruction.py's filtering loop: same calls, same order."""
    new_instruction_tokens = scorer._tokenizer.tokenize(new_instruction)
    with Pool(num_cpus) as p:
        rouge_scores = p.map(
            partial(rouge_scorer._score_lcs, new_instruction_tokens),
            all_instruction_tokens,
        )
    rouge_scores = [score.fmeasure for score in rouge_scores]
    most_similar_instructions = {
        all_instructions[i]: rouge_scores[i] for i in np.argsort(rouge_scores)[-10:][::-1]
    }
    if max(rouge_scores) > 0.7:
        return False, rouge_scores, most_similar_instructions, None
    return True, rouge_scores, most_similar_instructions, float(np.mean(rouge_scores))


def run_ours(seeds: list[str], stream: Iterator[str], kept_target: int
             ) -> tuple[list[str], list[int], NoveltyFilter, float, list]:
    """check() + add() (decision, best, top-10) until kept_target are kept. Returns the candidates, the pool
    size before each, the filter, the seconds spent in the filter (not in making candidates), the results."""
    nf = NoveltyFilter(threshold=0.7, top_k=10)
    nf.add(seeds)
    texts, pool_sizes, results, seconds = [], [], [], 0.0
    while len(nf) - len(seeds) < kept_target:
        text = next(stream)
        texts.append(text)
        pool_sizes.append(len(nf))
        t0 = time.perf_counter()
        res = nf.check(text)
        if res.kept:
            nf.add([text])
        seconds += time.perf_counter() - t0
        results.append(res)
    return texts, pool_sizes, nf, seconds, results


def time_pass(seeds: list[str], stream: list[str], mode: str) -> tuple[float, list]:
    """One more pass of ours over the same candidates: 'check_and_add' (decision + best), 'check' (check + add:
    decision + best + top-10) or 'mean' (the same with with_mean=True: + the mean)."""
    nf = NoveltyFilter(threshold=0.7, top_k=10, with_mean=mode == "mean")
    nf.add(seeds)
    out = []
    t0 = time.perf_counter()
    for text in stream:
        if mode == "check_and_add":
            out.append(nf.check_and_add(text))
        else:
            res = nf.check(text)
            if res.kept:
                nf.add([text])
            out.append(res)
    return time.perf_counter() - t0, out


class AllPairs:
    """Independent exact scores: rouge_score's tokenizer, an LCS for every pair (rapidfuzz, in C), rouge_score's
    scoring.fmeasure."""

    def __init__(self, scorer, pool: list[str]):
        self.scorer, self.ids = scorer, {}
        self.pool = [self.encode(t) for t in pool]

    def encode(self, text: str) -> tuple[str, int]:
        tokens = self.scorer._tokenizer.tokenize(text)
        return "".join(self.ids.setdefault(t, chr(len(self.ids))) for t in tokens), len(tokens)

    def scores(self, text: str, pool_size: int) -> np.ndarray:
        seq, m = self.encode(text)
        pool = self.pool[:pool_size]
        lcs = process.cdist([seq], [s for s, _ in pool], scorer=LCSseq.similarity, dtype=np.int32, workers=1)[0]
        return np.array([scoring.fmeasure(c / n, c / m) if c else 0.0 for c, (_, n) in zip(lcs.tolist(), pool)])


def differences(ours, scores: list[float], stable_texts: list[str] | None) -> dict[str, bool]:
    """Decision, best, top-10 scores (as a multiset: the reference's default argsort orders ties its own way)
    and, when given, the top-10 texts in stable order (ties: the later pool text first)."""
    best = max(scores)
    top = sorted((scores[i] for i in np.argsort(scores)[-10:]), reverse=True)
    return {"decision": ours.kept != (not best > 0.7), "best": ours.best != best,
            "top_scores": [s for _, s in ours.top] != top,
            "top_texts": stable_texts is not None and [t for t, _ in ours.top] != stable_texts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kept", type=int, default=5000, help="stream until ours keeps this many (beyond the seeds)")
    p.add_argument("--skip-reference", action="store_true", help="do not run the reference loop")
    p.add_argument("--ref-prefix", type=int, default=200, help="reference: first N candidates, sequential, own pool")
    p.add_argument("--ref-samples", type=int, default=30, help="reference: candidates spread over the stream")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="the reference's Pool(num_cpus)")
    p.add_argument("--check-every", type=int, default=0, help="all-pairs exact check of every k-th candidate "
                   "(default: 1 up to 10,000 kept, else 50)")
    p.add_argument("--mean", action=argparse.BooleanOptionalAction, default=None,
                   help="also time ours with with_mean=True (default: up to 10,000 kept)")
    args = p.parse_args()
    seeds, words = load_seeds(SEEDS)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start "
          f"(shared with other jobs: timings are noisy; ours is timed before and after the reference)")

    t0 = time.perf_counter()
    warm = NoveltyFilter(with_mean=True)
    warm.add(["warm up"])
    warm.check("warm up the compiled kernel")
    print(f"ours, compiled kernel ready in {time.perf_counter() - t0:.2f} s (numba: compiled on the first use on "
          f"a machine, about 6 s on 2 cores, then loaded from its disk cache; not in the times below)")
    stream, pool_sizes, nf, t_check, results = run_ours(seeds, candidate_stream(seeds, words), args.kept)
    n_kept = sum(r.kept for r in results)
    print(f"\nstream: {len(stream)} candidates, {n_kept} kept, {len(stream) - n_kept} rejected "
          f"({sum(not tokenize(t) for t in stream)} without a-z0-9 tokens, kept as the reference does); "
          f"pool {len(seeds)} seeds -> {len(nf)}")
    t_dec, dec = time_pass(seeds, stream, "check_and_add")
    assert [k for k, _ in dec] == [r.kept for r in results] and [b for _, b in dec] == [r.best for r in results]
    per = 1e6 / len(stream)
    print(f"ours, check_and_add (decision + best):            {t_dec:8.3f} s  {t_dec * per:6.0f} us/candidate")
    print(f"ours, check + add (decision + best + top-10):      {t_check:8.3f} s  {t_check * per:6.0f} us/candidate")
    do_mean = args.mean if args.mean is not None else args.kept <= 10000
    if do_mean:
        t_mean, with_mean = time_pass(seeds, stream, "mean")
        print(f"ours, with_mean (decision + best + top-10 + mean): {t_mean:8.3f} s  {t_mean * per:6.0f} us/candidate")

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    every = args.check_every or (1 if args.kept <= 10000 else 50)
    t0 = time.perf_counter()
    exact = AllPairs(scorer, nf.texts)
    diffs = dict.fromkeys(["decision", "best", "top_scores", "top_texts"] + (["mean"] if do_mean else []), 0)
    for j in range(0, len(stream), every):
        scores = exact.scores(stream[j], pool_sizes[j])
        stable = [nf.texts[i] for i in np.argsort(scores, kind="stable")[-10:][::-1]]
        for key, bad in differences(results[j], scores.tolist(), stable).items():
            diffs[key] += bad
        if do_mean:
            diffs["mean"] += with_mean[j].mean != float(np.mean(scores))
    print(f"\nall-pairs exact check ({len(range(0, len(stream), every))} candidates, every {every}, "
          f"{time.perf_counter() - t0:.0f} s): differing " + ", ".join(f"{k} {v}" for k, v in diffs.items()))

    if args.skip_reference:
        return
    fit_n, fit_t = [], []
    rdiff = dict.fromkeys(diffs, 0)

    def reference(j: int, pool_texts: list[str], pool_tokens: list[list[str]]) -> bool:
        t0 = time.perf_counter()
        kept, scores, _, mean = reference_check(stream[j], pool_texts, pool_tokens, scorer, args.num_cpus)
        fit_t.append(time.perf_counter() - t0)
        fit_n.append(len(pool_texts))
        for key, bad in differences(results[j], scores, None).items():
            rdiff[key] += bad
        if do_mean and kept:  # the reference computes the mean of kept candidates only
            rdiff["mean"] += with_mean[j].mean != mean
        return kept

    print(f"\nreference starts (load average {os.getloadavg()[0]:.2f})")
    # (1) the reference loop itself on the first candidates, with its own pool
    prefix = min(args.ref_prefix, len(stream))
    all_instructions = list(seeds)
    all_instruction_tokens = [scorer._tokenizer.tokenize(inst) for inst in all_instructions]
    for j in range(prefix):
        if reference(j, all_instructions, all_instruction_tokens):
            all_instructions.append(stream[j])
            all_instruction_tokens.append(scorer._tokenizer.tokenize(stream[j]))
    t_prefix = sum(fit_t)
    print(f"reference, first {prefix} candidates (sequential, its own pool {len(seeds)} -> {len(all_instructions)}; "
          f"ours {len(seeds)} -> {pool_sizes[prefix] if prefix < len(stream) else len(nf)}): {t_prefix:.1f} s measured")
    # (2) candidates spread over the rest, each against the pool ours had at that point
    picks = np.linspace(prefix, len(stream) - 1, args.ref_samples).astype(int).tolist() if len(stream) > prefix else []
    pool_tokens = [scorer._tokenizer.tokenize(t) for t in nf.texts]
    for j in picks:
        reference(j, nf.texts[:pool_sizes[j]], pool_tokens[:pool_sizes[j]])
    if picks:
        print(f"reference, {len(picks)} sampled candidates at pool sizes {pool_sizes[picks[0]]}..{pool_sizes[picks[-1]]}: "
              f"{sum(fit_t) - t_prefix:.1f} s measured")
    print(f"reference vs ours on the {len(fit_t)} candidates it ran: differing "
          + ", ".join(f"{k} {v}" for k, v in rdiff.items()))

    # the machine may be shared: time ours again now, after the reference, and give a ratio for each pass
    t_dec2, _ = time_pass(seeds, stream, "check_and_add")
    t_check2, _ = time_pass(seeds, stream, "check")
    print(f"ours again after the reference (load average {os.getloadavg()[0]:.2f}): check_and_add {t_dec2:.3f} s, "
          f"check + add {t_check2:.3f} s")

    slope, intercept = np.polyfit(fit_n, fit_t, 1)
    total = float(sum(intercept + slope * n for n in pool_sizes))
    print(f"\nreference time per candidate ~ {intercept * 1000:.1f} ms + {slope * 1e6:.2f} us x pool size "
          f"(least squares over its {len(fit_t)} runs, Pool({args.num_cpus}))")
    print(f"reference, whole stream ({len(stream)} candidates, {n_kept} kept): {total:.0f} s EXTRAPOLATED from that fit")
    for name, times in [("check_and_add", [t_dec, t_dec2]), ("check (+ top-10)", [t_check, t_check2])] + (
            [("with_mean", [t_mean])] if do_mean else []):
        print(f"ratio reference / ours, {name:17s}: " + ", ".join(f"{total / t:5.0f}x" for t in times)
              + f"  ({total:.0f} s extrapolated / " + ", ".join(f"{t:.3f}" for t in times) + " s measured)")


if __name__ == "__main__":
    main()
