"""The run folder: its layout, its JSONL files, its saved config and its checkpoint, in one place.

OUT/config.yaml            the resolved config, saved once the preflight passed
OUT/metrics.jsonl          one line per finished round
OUT/checkpoint.json        the loop state after the last finished stage
OUT/teacher_calls.jsonl    the journal of teacher attempts and replies (generation/teacher/cache.py Journal)
OUT/wandb_rounds.jsonl     the rounds handed to W&B
OUT/eval/                  the fixed validation and test sets
OUT/rounds/<r>/            data.jsonl, rejected.jsonl, eval_samples.jsonl, adapter/

The checkpoint keeps what cannot be rebuilt and references what can: the rows are read back from
rounds/<r>/data.jsonl, the pool and the chunks from the config's files, and the method's start state from
the method's start() (the saved state only says which pool examples survived pruning and what was added since). So it is
sized by the loop's state, not by the corpus, and loading it runs no code. A checkpoint.pkl from an older version
is read only with --allow-pickle, since unpickling a file runs whatever code the file names.
"""
from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml

from generation.data.pool import pool_refs
from generation.rows import RoundStats, upgrade
from generation.teacher.cache import Ledger
from loop.config import renamed

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.json"
LEGACY_CHECKPOINT = "checkpoint.pkl"
JOURNAL = "teacher_calls.jsonl"
WANDB_ROUNDS = "wandb_rounds.jsonl"
log = logging.getLogger(__name__)
# What write_atomic leaves when a kill lands mid-write: '.<name>.<8 random chars>' beside the file.
_STALE = re.compile(r"^\.[\w.-]+\.(?:json|jsonl|yaml|pkl)\.\w{8}$")


class CheckpointError(ValueError):
    """The checkpoint cannot be read; the message says what to do."""


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path, strict: bool = False) -> list[dict]:
    """Rows of a .jsonl file, none if it is missing. A line torn by a kill (only the last can be) is skipped with a
    warning, unless strict, where it raises (rows the loop itself reads back)."""
    return list(iter_jsonl(path, strict))


def iter_jsonl(path: Path, strict: bool = False) -> Iterator[dict]:
    """read_jsonl a line at a time, so a large file is never held whole."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if strict:
                    raise
                log.warning("%s:%d is not valid JSON (torn by a kill?); skipped", path, n)


def jsonl(rows: list[dict]) -> str:
    """Rows as .jsonl text, the one format every row file of a run is written in (so a resumed round's bytes match)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, jsonl(rows))


class RowWriter:
    """A .jsonl file written a batch of rows at a time, atomically as a whole: the lines go to a hidden file beside
    it, which replaces it (fsynced) at commit(), so a kill leaves the old file or none, never part of one."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.rows = path, 0
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        self.f = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        self.f.write(jsonl(rows))
        self.f.flush()  # on disk (in the hidden file) as they come, not in a buffer
        self.rows += len(rows)

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.f.close()
        Path(self.tmp).unlink(missing_ok=True)


def round_dir(out: Path, r: int) -> Path:
    return out / "rounds" / str(r)


def round_rows(out: Path, r: int) -> Iterator[dict]:
    """Round r's kept rows (rounds/<r>/data.jsonl) one at a time, in the current schema."""
    return (upgrade(x) for x in iter_jsonl(round_dir(out, r) / "data.jsonl", strict=True))


def run_rows(out: Path, rounds: int) -> Iterator[dict]:
    """The kept rows of rounds 1..rounds, one at a time."""
    for r in range(1, rounds + 1):
        yield from round_rows(out, r)


def round_numbers(out: Path) -> list[int]:
    """The rounds with a folder, in order."""
    return sorted(int(d.name) for d in (out / "rounds").iterdir() if d.name.isdigit()) if (out / "rounds").is_dir() else []


def read_config(out: Path | str) -> dict:
    """The run's saved config as a dict ({} when there is none), keys an older version named differently moved to
    their current place."""
    path = Path(out) / CONFIG
    return renamed(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path)) if path.exists() else {}


def save_config(out: Path, config: dict) -> None:
    write_atomic(out / CONFIG, yaml.safe_dump(config, sort_keys=False))


@dataclass
class LoopState:
    """Everything needed to continue a run after a kill."""
    round: int = 1  # the round in progress
    stage: str = "start"  # last finished stage of that round: start | generated | trained
    rng: tuple = ()
    weights: dict = field(default_factory=dict)
    loss_history: list = field(default_factory=list)  # per-task eval loss of each finished round
    task_counts: dict = field(default_factory=dict)  # kept rows per task so far (ucb)
    rounds_with_rows: int = 0  # rounds whose kept rows are written (rounds/<r>/data.jsonl, read back with run_rows)
    adapter: str | None = None
    history: list = field(default_factory=list)  # metrics of each finished round
    method: object = None  # the method's State (generation/methods/<name>.py)
    ledger: Ledger = field(default_factory=Ledger)  # the run's teacher ledger
    round_ledger_start: Ledger = field(default_factory=Ledger)
    base_bench: dict | None = None
    stats: RoundStats | None = None
    gen_seconds: float = 0.0
    train_stats: dict = field(default_factory=dict)
    wandb_id: str = ""
    stopped: str = ""  # why the run ended early: budget or plateau
    judge_ledger: Ledger = field(default_factory=Ledger)  # the test-set judge's calls, apart from generation's


def save_checkpoint(out: Path, st: LoopState, journal=None) -> None:
    """journal: the run's call journal, fsynced first, so the checkpoint is never newer than the ledger it implies."""
    if journal is not None:
        journal.sync()
    write_atomic(out / CHECKPOINT, json.dumps(_checkpoint_json(st, st.method.to_json()), ensure_ascii=False))


def _checkpoint_json(st: LoopState, method: dict) -> dict:
    return {"version": 1, **{f.name: getattr(st, f.name) for f in fields(st) if f.name not in ("method", "rounds_with_rows", "rng")},
            "rng": [st.rng[0], list(st.rng[1]), st.rng[2]] if st.rng else [],
            "rounds_with_rows": st.rounds_with_rows,
            "ledger": asdict(st.ledger), "round_ledger_start": asdict(st.round_ledger_start), "judge_ledger": asdict(st.judge_ledger),
            "stats": asdict(st.stats) if st.stats is not None else None, "method": method}


def read_checkpoint(out: Path, allow_pickle: bool = False) -> dict:
    """The saved state as checkpoint.json holds it; an older version's checkpoint.pkl (only when allowed) is turned
    into the same form, so a resume has one path."""
    path = out / CHECKPOINT
    if path.exists():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or state.get("version") != 1:
                raise ValueError("not a version-1 checkpoint")
            return state
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); the finished rounds are in "
                                  f"{out / 'rounds'}; start a new run with another --out") from None
    legacy = out / LEGACY_CHECKPOINT
    if not legacy.exists():
        raise FileNotFoundError(f"{out} has no {CHECKPOINT}: not a run folder, or it was made before resume existed")
    if not allow_pickle:
        raise CheckpointError(f"{out} holds an older {LEGACY_CHECKPOINT}; loading it runs any code the file names, so resume "
                              "it only if you trust who wrote it: `daig resume --allow-pickle " f"{out}`")
    try:
        return _legacy_json(_LegacyUnpickler(io.BytesIO(legacy.read_bytes())).load())
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as e:
        raise CheckpointError(f"{legacy} is damaged ({type(e).__name__}); the finished rounds are in {out / 'rounds'}; "
                              "start a new run with another --out") from None


def state_from_json(saved: dict, out: Path, method) -> LoopState:
    """The LoopState a checkpoint describes; `method` is the method's fresh start() state, which the saved changes
    (pruned or evolved pool, instructions added, counts) are laid over."""
    try:
        return _state_from_json(saved, out, method)
    except (KeyError, TypeError, ValueError, IndexError, OSError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{out / CHECKPOINT} does not match its run folder ({type(e).__name__}: {str(e)[:300]}); the finished "
                              f"rounds are in {out / 'rounds'}; start a new run with another --out") from None


def _state_from_json(saved: dict, out: Path, method) -> LoopState:
    s = dict(saved)
    method.restore(s.pop("method"))
    rng = s.pop("rng")
    for _ in run_rows(out, s["rounds_with_rows"]):  # every line readable, without holding them
        pass
    stats = s.pop("stats")
    s.pop("version")
    return LoopState(**{**s, "rng": (rng[0], tuple(rng[1]), rng[2]) if rng else (), "method": method,
                        "stats": RoundStats(**stats) if stats is not None else None,
                        **{k: Ledger(**s[k]) for k in ("ledger", "round_ledger_start", "judge_ledger")}})


# Where the classes an older checkpoint.pkl names live now (module renames, then single classes that moved).
_MOVED_MODULES = {"loop.checkpoint": "loop.runfolder", "generation.daig": "generation.methods.daig",
                  "generation.self_instruct": "generation.methods.self_instruct", "generation.alpaca": "generation.methods.alpaca",
                  "generation.evol": "generation.methods.evol", "generation.dynosaur": "generation.methods.dynosaur",
                  "generation.teachers": "generation.teacher.backends", "generation.cache": "generation.teacher.cache",
                  "generation.llamacpp": "generation.teacher.llamacpp", "generation.filters": "generation.filters.rules",
                  "generation.novelty": "generation.filters.novelty", "generation.diversity": "generation.filters.batch",
                  "generation.grounding": "generation.filters.grounding", "generation.embeddings": "generation.filters.embeddings",
                  "generation.corpus": "generation.data.corpus", "generation.pool": "generation.data.pool",
                  "generation.seeds": "generation.data.seeds"}
_MOVED_CLASSES = {("generation.daig", "RoundStats"): "generation.rows", ("generation.evol", "EvolvedItem"): "generation.data.pool",
                  ("loop.methods", "MethodState"): __name__}


class MethodState:
    """Only the attributes of the one state class every method shared before the method contract (older pickles)."""


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        module = _MOVED_CLASSES.get((module, name)) or _MOVED_MODULES.get(module, module)
        return super().find_class(module, name)


def _legacy_json(st: LoopState) -> dict:
    """An older pickled LoopState in checkpoint.json's form (its novelty pool whole: no start count was kept)."""
    held = st.__dict__.pop("rounds_rows", [])  # older states held every round's rows; their count is what is kept now
    fill_defaults(st)  # first, so a missing judge_ledger is a fresh Ledger before the ledgers get their missing fields
    st.rounds_with_rows = len(held)
    for obj in (st.ledger, st.round_ledger_start, st.judge_ledger, *([st.stats] if st.stats else [])):
        fill_defaults(obj)
    m = st.method.__dict__
    novelty = m.get("novelty")
    method = {"pool": pool_refs(m["pool"]), "novelty_texts": list(novelty.texts) if novelty is not None else [],
              "machine": m.get("machine", []), "seen": sorted(m.get("seen", set())), "chunk_counts": m.get("chunk_counts", {}),
              "chunk_requests": m.get("chunk_requests", {})}
    return _checkpoint_json(st, method)


def fill_defaults(obj) -> None:
    """Set the dataclass fields an older pickle of `obj` lacks to their defaults."""
    for f in fields(obj):
        if f.name not in obj.__dict__:
            obj.__dict__[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default


def clean_stale(out: Path) -> list[Path]:
    """Remove the temporary files a kill mid-write left (never the wandb folder's); returns what was removed."""
    removed = []
    for p in out.rglob(".*"):
        if p.is_file() and _STALE.match(p.name) and "wandb" not in p.relative_to(out).parts:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
