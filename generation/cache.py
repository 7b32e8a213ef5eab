"""Content-addressed teacher cache and cost ledger.

The cache is one sqlite file (WAL mode: safe under concurrent writers in several processes, and a kill
at any moment leaves the last committed state). Keys hash what changes the output (model, messages,
decoding parameters, seed), never concurrency or batch size, so runs and ablation arms pointing at the
same file pay once for the same prompt. Only successful replies are stored; failures are retried.

CachedTeacher wraps any teacher: it serves hits, sends misses, stores each reply as it arrives, keeps
the ledger (requests, hits, failures by reason, tokens, dollars) and enforces the budget caps.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from generation.teachers import Teacher, TeacherReply, TeacherRequest

BUDGET_EXHAUSTED = "budget_exhausted"


class TeacherCache:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT, created REAL)")

    def get_many(self, keys: list[str]) -> dict[str, TeacherReply]:
        found = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                rows = self._db.execute(f"SELECT key, reply FROM replies WHERE key IN ({','.join('?' * len(part))})", part)
                found.update({k: TeacherReply(**json.loads(v)) for k, v in rows})
        return found

    def put(self, key: str, model: str, reply: TeacherReply) -> None:
        if reply.error:
            return
        data = json.dumps({k: v for k, v in asdict(reply).items() if k not in ("cached", "attempts")})
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?)", (key, model, data, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self._db.close()


@dataclass
class Ledger:
    """What the teacher cost. Tokens and dollars count paid calls only (cache hits are free)."""
    requests: int = 0
    cache_hits: int = 0
    calls: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def minus(self, before: "Ledger") -> "Ledger":
        failures = {k: v - before.failures.get(k, 0) for k, v in self.failures.items() if v - before.failures.get(k, 0)}
        return Ledger(self.requests - before.requests, self.cache_hits - before.cache_hits, self.calls - before.calls,
                      self.retries - before.retries, failures, self.prompt_tokens - before.prompt_tokens,
                      self.completion_tokens - before.completion_tokens, self.cost_usd - before.cost_usd)

    def copy(self) -> "Ledger":
        return Ledger(**{**asdict(self), "failures": dict(self.failures)})


@dataclass
class Budget:
    max_calls: int = 0  # 0 = no cap
    max_tokens: int = 0
    max_cost_usd: float = 0.0
    usd_per_m_prompt: float = 0.0
    usd_per_m_completion: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.usd_per_m_prompt + completion_tokens * self.usd_per_m_completion) / 1e6


def worst_case_tokens(r: TeacherRequest) -> tuple[int, int]:
    """An upper bound on a request's tokens before sending: a byte-level token is at least one byte,
    plus chat-template overhead per message."""
    return sum(len(c.encode()) + 16 for _, c in r.messages), r.max_tokens


class CachedTeacher:
    def __init__(self, teacher: Teacher, cache: TeacherCache | None, budget: Budget):
        self.teacher, self.cache, self.budget = teacher, cache, budget
        self.model = teacher.model
        self.ledger = Ledger()
        self.exhausted = ""  # which cap stopped generation, once one did

    def generate(self, requests: list[TeacherRequest], desc: str = "teacher") -> list[TeacherReply]:
        keys = [r.key(self.model) for r in requests]
        hits = self.cache.get_many(keys) if self.cache else {}
        self.ledger.requests += len(requests)
        self.ledger.cache_hits += sum(k in hits for k in keys)
        first: dict[str, int] = {}  # identical requests in one call are sent once
        for i, k in enumerate(keys):
            if k not in hits:
                first.setdefault(k, i)
        pending = list(first.values())
        while pending:
            admitted = self._admit(pending, requests)
            if not admitted:
                break
            for i, reply in zip(admitted, self._send([requests[i] for i in admitted], [keys[i] for i in admitted], desc)):
                hits[keys[i]] = reply
            pending = pending[len(admitted):]
        replies = []
        for i, k in enumerate(keys):
            if k in hits:
                replies.append(TeacherReply(**{**asdict(hits[k]), "cached": first.get(k) != i}))
            else:  # over budget: never sent
                replies.append(TeacherReply("", "error", error=BUDGET_EXHAUSTED))
                self._fail(BUDGET_EXHAUSTED)
        return replies

    def _admit(self, pending: list[int], requests: list[TeacherRequest]) -> list[int]:
        """The longest prefix of pending whose worst case fits every cap; records which cap stopped it."""
        b, led = self.budget, self.ledger
        admitted, tokens, cost, stop = [], led.prompt_tokens + led.completion_tokens, led.cost_usd, ""
        for n, i in enumerate(pending):
            p, c = worst_case_tokens(requests[i])
            if b.max_calls and led.calls + n >= b.max_calls:
                stop = "max_teacher_calls"
            elif b.max_tokens and tokens + p + c > b.max_tokens:
                stop = "max_teacher_tokens"
            elif b.max_cost_usd and cost + b.cost(p, c) > b.max_cost_usd:
                stop = "max_cost_usd"
            if stop:
                self.exhausted = self.exhausted or stop
                break
            admitted.append(i)
            tokens, cost = tokens + p + c, cost + b.cost(p, c)
        return admitted

    def _send(self, requests: list[TeacherRequest], keys: list[str], desc: str) -> list[TeacherReply]:
        def store(index: int, reply: TeacherReply) -> None:
            if self.cache is not None:
                self.cache.put(keys[index], self.model, reply)

        replies = self.teacher.generate(requests, desc=desc, on_reply=store)
        for reply in replies:
            self.ledger.calls += 1
            self.ledger.retries += max(reply.attempts - 1, 0)
            self.ledger.prompt_tokens += reply.prompt_tokens
            self.ledger.completion_tokens += reply.completion_tokens
            self.ledger.cost_usd += self.budget.cost(reply.prompt_tokens, reply.completion_tokens)
            if reply.error:
                self._fail(reply.error)
        return replies

    def _fail(self, reason: str) -> None:
        self.ledger.failures[reason] = self.ledger.failures.get(reason, 0) + 1

    def close(self) -> None:
        self.teacher.close()
        if self.cache is not None:
            self.cache.close()
