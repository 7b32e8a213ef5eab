"""Feedback policies: per-task eval loss -> next round's task sampling weights.

A policy is a plain function dict[task, loss] -> dict[task, weight] whose weights sum to 1.
Tasks without a finite loss yet (never generated, or nothing held out) get the mean of the known
losses, so they are neither favoured nor starved.
"""
from __future__ import annotations

import math

from loop.config import FeedbackConfig


def _fill_missing(losses: dict[str, float]) -> dict[str, float]:
    known = [v for v in losses.values() if v is not None and math.isfinite(v)]
    mean = sum(known) / len(known) if known else 0.0
    return {t: v if v is not None and math.isfinite(v) else mean for t, v in losses.items()}


def uniform(losses: dict[str, float]) -> dict[str, float]:
    return {t: 1.0 / len(losses) for t in losses}


def loss_softmax(losses: dict[str, float], temperature: float, floor: float) -> dict[str, float]:
    """floor + (1 - n*floor) * softmax(loss / temperature): higher loss, more weight; none below floor."""
    if floor * len(losses) >= 1:
        raise ValueError(f"feedback.floor={floor} is too high for {len(losses)} tasks: it must be < {1 / len(losses):.4f}")
    filled = _fill_missing(losses)
    top = max(filled.values())
    exp = {t: math.exp((v - top) / temperature) for t, v in filled.items()}
    total = sum(exp.values())
    return {t: floor + (1 - floor * len(exp)) * e / total for t, e in exp.items()}


def next_weights(losses: dict[str, float], cfg: FeedbackConfig) -> dict[str, float]:
    if cfg.policy == "uniform":
        return uniform(losses)
    return loss_softmax(losses, cfg.temperature, cfg.floor)
