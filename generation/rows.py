"""What every generation method shares about its rows: the round's counts, the request seed, the teacher-failure reason.

(The one row schema the issue asks for is the next step; these are the pieces every method already repeated.)
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoundStats:
    """Candidates and rejections; what the teacher cost is the teacher ledger's business."""
    requests: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    chunks: int = 0  # distinct chunks this round's requests were about
    documents: int = 0  # distinct documents (pages) those chunks came from

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def request_seed(seed: int, round_idx: int) -> int:
    """The first sampling seed of a round's requests (request i gets this + i): distinct per run seed and round, so a
    resumed or repeated round asks the same requests and the cache answers them."""
    return seed * 100003 + round_idx * 1009


def teacher_failure(reply) -> str:
    """The rejection reason of a reply that came back as an error ('' when it did not)."""
    return f"teacher_{reply.error}" if reply.error else ""
