"""Metrics: metrics.jsonl on disk always; Weights & Biases when enabled (offline unless wandb has credentials).

The W&B API key is read by wandb itself from WANDB_API_KEY; it is never passed, logged or saved here.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from loop.config import TrackingConfig
from loop.runfolder import METRICS, WANDB_ROUNDS, read_jsonl, round_dir

log = logging.getLogger(__name__)


def append_jsonl(path: Path, row: dict) -> None:
    """Append one line and fsync, so a crash never leaves a half-written record behind a complete one."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def wandb_mode(mode: str) -> str:
    """'auto': WANDB_MODE when set; else online when wandb has credentials (WANDB_API_KEY, or what `wandb login`
    wrote to the netrc file for the W&B host), which a sweep agent's runs inherit; else offline, never a prompt."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") or netrc_key(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")) else "offline"


def netrc_key(base_url: str) -> bool:
    """Whether the netrc file (NETRC, else ~/.netrc: where `wandb login` stores the key) has a password for base_url's host."""
    import netrc
    from urllib.parse import urlparse

    try:
        entry = netrc.netrc(os.environ.get("NETRC") or os.path.expanduser("~/.netrc")).authenticators(urlparse(base_url).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def logged_rounds(path: Path) -> set[int]:
    """The rounds a JSONL log holds (metrics.jsonl, or the record of rounds W&B accepted); torn lines name none."""
    return {row["round"] for row in read_jsonl(path) if isinstance(row, dict) and "round" in row}


class Tracker:
    def __init__(self, cfg: TrackingConfig, out_dir: Path, run_config: dict, run_id: str = ""):
        """run_id: the W&B run to continue (a resumed run keeps logging into the same W&B run)."""
        self.metrics_path = out_dir / METRICS
        self.wandb_path = out_dir / WANDB_ROUNDS  # rounds handed to W&B, so a resume logs the ones a kill cut off
        self.run = None
        self.defined: set[str] = set()  # metrics given their x-axis (define_metric) in this process
        self.logged: dict[str, object] = {}  # "<kind>:round-<r>" -> the artifact this process logged
        self.streamed: set[int] = set()  # rounds whose trainer log went to W&B live (train_logger)
        if not cfg.wandb or cfg.mode == "disabled":
            return
        import wandb

        mode = wandb_mode(cfg.mode)
        self.run = wandb.init(project=cfg.project, entity=cfg.entity or None, group=cfg.group or None, job_type=cfg.job_type or None,
                              name=cfg.run_name or out_dir.name, tags=cfg.tags or None, dir=str(out_dir),
                              config=run_config, mode=mode, reinit="finish_previous",
                              **({"id": run_id, "resume": "allow"} if run_id else {}))
        # Round metrics are plotted against the round (and can be against the run's cumulative teacher calls), each
        # round's training curve against its own step: nothing is logged with step=, so the two never collide.
        self.run.define_metric("round")
        self.run.define_metric("run_teacher_calls", step_metric="round")
        log.info("W&B run %s (%s mode), files in %s", self.run.name, mode, out_dir / "wandb")

    def use_inputs(self, inputs: list[tuple[str, str, str]]) -> None:
        """Record what the run reads, (name, type, local path or Hub id), as W&B artifacts it used: lineage from the
        corpus to every adapter. A local path is a file reference (checksummed, not uploaded). W&B records uses only
        online; offline the inputs are in the run's config."""
        if self.run is None or self.run.offline:
            return
        import wandb

        for name, kind, source in inputs:
            art = wandb.Artifact(name, type=kind, metadata={"source": source})
            if Path(source).expanduser().exists():
                art.add_reference(Path(source).expanduser().resolve().as_uri())
            else:
                with art.new_file("source.json") as f:
                    json.dump({"source": source}, f)
            self.run.use_artifact(art)

    def log_round(self, metrics: dict, weights_table: list[list], samples: list[dict], curve: list[dict] = (),
                  artifacts: list[tuple[str, str, Path]] = (), used: list[str] = ()) -> None:
        """curve: this round's training log (step, loss, learning_rate, grad_norm); artifacts: (kind, type, file or
        folder) to version in W&B as '<kind>-<run id>' with aliases round-<r> and latest; used: kinds of the previous
        round's artifacts this round started from (adapter_mode continue: 'adapter'). Each destination gets the round
        once: a round finished again after a kill is not logged twice."""
        r = metrics["round"]
        if r not in logged_rounds(self.metrics_path):
            append_jsonl(self.metrics_path, metrics)
        if self.run is None or r in logged_rounds(self.wandb_path):
            return
        import wandb

        for kind in used:  # lineage: this round's adapter grew from the previous one
            prev = self.logged.get(f"{kind}:round-{r - 1}")
            if not self.run.offline and (prev is not None or r > 1):
                self.run.use_artifact(prev or f"{kind}-{self.run.id}:round-{r - 1}")
        for kind, art_type, path in artifacts:
            art = wandb.Artifact(f"{kind}-{self.run.id}", type=art_type, metadata={"round": r})
            if Path(path).is_dir():
                art.add_dir(str(path))
            else:
                art.add_file(str(path))
            self.logged[f"{kind}:round-{r}"] = self.run.log_artifact(art, aliases=[f"round-{r}", "latest"])
        if r not in self.streamed:  # trained by `accelerate launch`, or streamed by a process a kill ended
            self.log_curve(r, curve)
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        for key in ("task_weights", "task_eval_loss", "task_eval_se", "task_eval_n", "task_eval_loss_shrunk", "test_task_loss", "test_task_se", "test_task_n",
                    "test_judge_verdicts", "next_task_weights", "rejected", "teacher_failures", "run_teacher_failures", "teacher_retry_reasons", "run_teacher_retry_reasons",
                    "generation_metrics"):
            flat.update({f"{key}/{t}": v for t, v in (metrics.get(key) or {}).items() if v is not None})
        flat["task_weights_table"] = wandb.Table(columns=["round", "task", "weight", "eval_loss", "next_weight"], data=weights_table)
        if curve:
            rows = [[r, c["step"], c["loss"]] for c in curve]
            flat["train_curve"] = wandb.plot.line(wandb.Table(columns=["round", "step", "loss"], data=rows), "step", "loss",
                                                  title=f"training loss, round {r}")
        if samples:
            cols = list(samples[0])
            flat["eval_samples"] = wandb.Table(columns=cols, data=[[s[c] for c in cols] for s in samples])
        for key in sorted(set(flat) - self.defined - {"round"}):
            self.run.define_metric(key, step_metric="round")
            self.defined.add(key)
        self.run.log(flat)
        append_jsonl(self.wandb_path, {"round": r})

    def train_logger(self, r: int):
        """A callable that logs round r's trainer entries to W&B as training writes them (in-process training), or
        None without W&B. A round streamed this way is not logged again from its stats by log_round."""
        if self.run is None:
            return None
        self.streamed.add(r)
        return self._curve_logger(r)

    def log_curve(self, r: int, curve: list[dict]) -> None:
        """The round's training log after the fact (accelerate launch, or a round a kill cut off)."""
        if curve:
            log_entry = self._curve_logger(r)
            for c in curve:
                log_entry(c)

    def _curve_logger(self, r: int):
        """Logs one trainer entry (loss, learning rate, grad norm, epoch) under train/round<r>/, against its own step."""
        section = f"train/round{r}"
        self.run.define_metric(f"{section}/step")
        self.run.define_metric(f"{section}/*", step_metric=f"{section}/step")
        return lambda entry: self.run.log({f"{section}/{k}": v for k, v in entry.items() if isinstance(v, (int, float))})

    def catch_up(self, out_dir: Path, recorded: bool = True) -> list[int]:
        """Log to W&B the rounds metrics.jsonl has and W&B never got (a kill between the two); returns them.
        recorded=False: a run begun before W&B hand-offs were recorded; its rounds are taken as logged."""
        if self.run is None or not self.metrics_path.exists():
            return []
        if not recorded and not self.wandb_path.exists():
            for r in sorted(logged_rounds(self.metrics_path)):
                append_jsonl(self.wandb_path, {"round": r})
            return []
        missing = []
        done = logged_rounds(self.wandb_path)
        for m in read_jsonl(self.metrics_path):
            if m["round"] in done:
                continue
            rdir = round_dir(out_dir, m["round"])
            table = [[m["round"], t, w, (m.get("task_eval_loss") or {}).get(t), (m.get("next_task_weights") or {}).get(t)]
                     for t, w in (m.get("task_weights") or {}).items()]
            samples = read_jsonl(rdir / "eval_samples.jsonl")
            artifacts = [("data", "dataset", rdir / "data.jsonl")] + \
                ([("adapter", "model", Path(m["adapter"]))] if m.get("adapter") and Path(m["adapter"]).is_dir() else [])
            self.log_round(m, table, samples, [], [a for a in artifacts if a[2].exists()])
            missing.append(m["round"])
        if missing:
            log.info("W&B: logged rounds %s, which a kill had cut off", missing)
        return missing

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
