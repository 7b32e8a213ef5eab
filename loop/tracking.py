"""Metrics: metrics.jsonl on disk always; Weights & Biases when enabled (offline without a key).

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


def logged_rounds(path: Path) -> set[int]:
    """The rounds a JSONL log holds (metrics.jsonl, or the record of rounds W&B accepted); torn lines name none."""
    return {row["round"] for row in read_jsonl(path) if isinstance(row, dict) and "round" in row}


class Tracker:
    def __init__(self, cfg: TrackingConfig, out_dir: Path, run_config: dict, run_id: str = ""):
        """run_id: the W&B run to continue (a resumed run keeps logging into the same W&B run)."""
        self.metrics_path = out_dir / METRICS
        self.wandb_path = out_dir / WANDB_ROUNDS  # rounds handed to W&B, so a resume logs the ones a kill cut off
        self.run = None
        if not cfg.wandb or cfg.mode == "disabled":
            return
        import wandb

        mode = cfg.mode
        if mode == "auto":  # WANDB_MODE wins; else online only when a key is set
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(project=cfg.project, entity=cfg.entity or None, group=cfg.group or None,
                              name=cfg.run_name or out_dir.name, tags=cfg.tags or None, dir=str(out_dir),
                              config=run_config, mode=mode, reinit="finish_previous",
                              **({"id": run_id, "resume": "allow"} if run_id else {}))
        log.info("W&B run %s (%s mode), files in %s", self.run.name, mode, out_dir / "wandb")

    def log_round(self, metrics: dict, weights_table: list[list], samples: list[dict], curve: list[dict] = (),
                  artifacts: list[tuple[str, str, Path]] = ()) -> None:
        """curve: this round's training loss history; artifacts: (name, type, file or folder) to version in W&B.
        Each destination gets the round once: a round finished again after a kill is not logged twice."""
        if metrics["round"] not in logged_rounds(self.metrics_path):
            append_jsonl(self.metrics_path, metrics)
        if self.run is None or metrics["round"] in logged_rounds(self.wandb_path):
            return
        import wandb

        for name, kind, path in artifacts:
            art = wandb.Artifact(name, type=kind, metadata={"round": metrics["round"]})
            if Path(path).is_dir():
                art.add_dir(str(path))
            else:
                art.add_file(str(path))
            self.run.log_artifact(art)
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        for key in ("task_weights", "task_eval_loss", "task_eval_se", "task_eval_n", "task_eval_loss_shrunk", "test_task_loss", "test_task_se", "test_task_n",
                    "test_judge_verdicts", "next_task_weights", "rejected", "teacher_failures", "run_teacher_failures", "teacher_retry_reasons", "run_teacher_retry_reasons",
                    "generation_metrics"):
            flat.update({f"{key}/{t}": v for t, v in (metrics.get(key) or {}).items() if v is not None})
        flat["task_weights_table"] = wandb.Table(columns=["round", "task", "weight", "eval_loss", "next_weight"], data=weights_table)
        if curve:
            rows = [[metrics["round"], c["step"], c["loss"]] for c in curve]
            flat["train_curve"] = wandb.plot.line(wandb.Table(columns=["round", "step", "loss"], data=rows), "step", "loss",
                                                  title=f"training loss, round {metrics['round']}")
        if samples:
            cols = list(samples[0])
            flat["eval_samples"] = wandb.Table(columns=cols, data=[[s[c] for c in cols] for s in samples])
        self.run.log(flat, step=metrics["round"])
        append_jsonl(self.wandb_path, {"round": metrics["round"]})

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
            artifacts = [(f"data-round{m['round']}", "dataset", rdir / "data.jsonl")] + \
                ([(f"adapter-round{m['round']}", "model", Path(m["adapter"]))] if m.get("adapter") and Path(m["adapter"]).is_dir() else [])
            self.log_round(m, table, samples, [], [a for a in artifacts if a[2].exists()])
            missing.append(m["round"])
        if missing:
            log.info("W&B: logged rounds %s, which a kill had cut off", missing)
        return missing

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
