"""Per-task evaluation of the student: held-out answer loss and generation metrics."""
