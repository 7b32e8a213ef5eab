"""Checks before any paid call: every problem a run would meet later, found now and reported together.

A run that pays the teacher and then finds its student cannot load has lost money and left a folder it cannot
resume; so the output folder, the cache, the student, the teacher and the endpoint are all checked first, each
problem as one line naming the field and the fix.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from generation.teacher.cache import CacheError, TeacherCache
from generation.teacher.backends import UNREACHABLE, TeacherError, api_key_from_env, check_replicas
from loop.config import RunConfig
from loop.models import ModelError, gguf_path, resolve_embedding_model, resolve_model

log = logging.getLogger("daig")


class PreflightError(ValueError):
    """One or more problems found before the run started; nothing was paid."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        # only the endpoint is unreachable: the same as it going down mid-run (exit 3, try again later)
        self.endpoint_down = all(UNREACHABLE in p for p in problems)
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{len(problems)} problems, nothing was paid:\n" + "\n".join(f"  - {p}" for p in problems))


def output_folder(out: Path) -> str:
    """'' when OUT is (or can be made) a writable folder, else the problem."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder path (it is created if missing)"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        return f"--out {out} is not writable ({e.strerror or e}); choose a folder you can write to"
    return ""


def check_models_and_services(cfg: RunConfig) -> list[str]:
    problems = []
    t = cfg.generation.teacher
    if t.cache_path:
        try:
            cache = TeacherCache(t.cache_path)
            cache.check_writable()
            cache.close()
        except CacheError as e:
            problems.append(f"generation.teacher.cache_path: {e}")
    problems += _loadable("student", cfg.student, cfg.cache_dir)
    if t.backend == "local":
        problems += _loadable("generation.teacher.model", t.model, cfg.cache_dir)
    elif t.backend == "llamacpp":
        try:
            gguf_path(t.model, cfg.cache_dir)
        except ModelError as e:
            problems.append(str(e))
    else:
        problems += _endpoint(t)
    n = cfg.generation.novelty
    if n.filter == "sedi" and n.sedi_distance == "embedding":
        try:
            resolve_embedding_model(n.embedding_model, cfg.cache_dir)
        except ModelError as e:  # documented fallback, so a warning rather than a stop
            log.warning("%s; the sedi filter will fall back to ROUGE-L distance", e)
    return problems


def _loadable(name: str, spec: str, cache_dir: str) -> list[str]:
    """The model's config and tokenizer load (weights are left for later: they are the slow part)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        path = resolve_model(spec, cache_dir)
        AutoConfig.from_pretrained(path)
        AutoTokenizer.from_pretrained(path)
    except (ModelError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        return [f"{name}={spec!r} does not load{offline}: {first[:160]}; use a packaged model (`daig models`), a local "
                "folder, or a Hub id you can reach"]
    return []


def _endpoint(t) -> list[str]:
    """The key is set, the endpoint answers, and it serves the model (when it lists its models). Of several replicas,
    one that is down is only warned about while another answers: the run takes it out until it answers."""
    try:
        return check_replicas(t.base_url, api_key_from_env(t.api_key_env), t.timeout_s, t.model)
    except TeacherError as e:  # no key
        return [str(e)]
