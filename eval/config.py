"""Typed configuration of the evaluation stage."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalConfig:
    rolling_heldout: bool = field(default=False, metadata={"help": "The old rolling split, off by default: hold out eval.heldout_fraction of each round's generated rows per task and steer by every held-out row so far (a set that grows and changes every round, and differs between ablation arms). Used only when there is no validation set (eval.validation_per_task=0 and no eval.validation_path)."})
    heldout_fraction: float = field(default=0.2, metadata={"help": "With eval.rolling_heldout: fraction of each task's kept examples held out for eval (split per task, before training)."})
    min_heldout_per_task: int = field(default=1, metadata={"help": "With eval.rolling_heldout: hold out at least this many examples of a task that has two or more."})
    batch_size: int = field(default=8, metadata={"help": "Examples per forward pass (length-sorted) for eval loss."})
    generation_samples: int = field(default=12, metadata={"help": "Eval rows the student answers greedily each round, scored by ROUGE-L against the reference (logged as samples and test_rouge_l): a fixed subset of the test set when there is one (round robin over its tasks), else of the rows decisions read. 0 disables."})
    max_new_tokens: int = field(default=96, metadata={"help": "Max new tokens for those sample answers."})

    validation_path: str = field(default="", metadata={"help": "Your own validation set ('' for none): a .jsonl file or `datasets` folder of rows with task, instruction, input, output (e.g. human-written questions about your documents). When set, the feedback policies and plateau stopping read its per-task losses, every generated row trains (no rolling held-out split), and it is copied to OUT/eval/validation.jsonl so a resumed run scores the same rows."})
    test_path: str = field(default="", metadata={"help": "Your own test set ('' for none), same format: scored every round (per-task loss with standard errors, ROUGE-L of greedy answers on the first generation_samples rows), logged and reported, never used for a decision. Copied to OUT/eval/test.jsonl."})
    validation_per_task: int = field(default=8, metadata={"help": "DAIG-built validation set: rows per task, made by the teacher before round 1 from held-out chunks (eval.heldout_chunks) with uniform task weights, eval.set_seed and the same grounding gates, saved to OUT/eval/validation.jsonl and never trained on; the feedback policies and plateau stopping read it, and every generated row trains. 8: measured on the policy experiment (bench/eval_set_size.py), one row's answer loss spreads 0.6-1.1 nats, so 8 rows give a standard error of 0.2-0.4, about half the spread of true losses between tasks, and shrinkage keeps most of a task's own loss (README, Measured). 0: no validation set (then nothing steers unless eval.rolling_heldout). Ignored when validation_path or test_path is given."})
    test_per_task: int = field(default=8, metadata={"help": "DAIG-built test set: rows per task, built with the validation set from the other half of the held-out chunks (OUT/eval/test.jsonl); scored and reported every round, never used for a decision. 0: none."})
    set_seed: int = field(default=1234, metadata={"help": "Seed of the DAIG-built eval sets and of the held-out chunk draw, apart from the run's seed, so every arm and seed of an ablation draws the same chunks and asks the same requests (the shared teacher cache then pays for them once)."})
    heldout_chunks: float = field(default=0.2, metadata={"help": "Share of the corpus's chunks the DAIG-built eval sets come from; training requests never see them (held-out chunks measure transfer to unseen passages). 0 builds the sets from the training chunks ('same chunks': new questions about trained passages, the closed-book knowledge test). Listed in OUT/eval/heldout_chunks.json."})
    decontamination_threshold: float = field(default=0.7, metadata={"help": "With fixed eval sets (yours or DAIG-built): a generated row whose instruction has ROUGE-L F above this with any validation or test instruction is rejected as 'close_to_eval' (score and nearest eval instruction on the row), so no near copy of an eval question is trained on. 0.7 is the novelty filter's near-duplicate bar (Self-Instruct's). 1 turns it off."})
    judge: bool = field(default=False, metadata={"help": "Also have the teacher grade each greedy test-set answer (the generation_samples rows) against its reference on a fixed rubric: CORRECT / PARTLY / WRONG, scored 1 / 0.5 / 0 (test_judge_score, verdicts in eval_samples.jsonl). Greedy, cached like every call, counted in its own ledger (judge_teacher_calls) and capped by eval.judge_max_calls, apart from the generation budget. Needs a test set."})
    judge_max_calls: int = field(default=500, metadata={"help": "Cap on the judge's paid teacher calls over the whole run (0: no cap); past it, answers go ungraded and the run goes on."})
    judge_max_tokens: int = field(default=8, metadata={"help": "Max tokens of a judge reply (one word)."})
    benchmark_path: str = field(default="", metadata={"help": "Held-out benchmark ('' to skip): 'builtin' (Self-Instruct's 252 user-oriented tasks, shipped with the package, Apache-2.0), a .jsonl of tasks in the Self-Instruct format (instruction, instances[0].input/output) or flat (instruction, input, output), or a datasets folder. Scored by ROUGE-L of the student's greedy answer; the base model once, each round's adapter beside it."})
    benchmark_size: int = field(default=16, metadata={"help": "Benchmark tasks scored (the first N)."})

    def __post_init__(self):
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction: must be in (0, 1), got {self.heldout_fraction}")
        if self.min_heldout_per_task < 0 or self.generation_samples < 0:
            raise ValueError("min_heldout_per_task and generation_samples: must be >= 0")
        if self.validation_per_task < 0 or self.test_per_task < 0:
            raise ValueError("validation_per_task and test_per_task: must be >= 0 (0 turns the DAIG-built set off)")
        if not 0 < self.decontamination_threshold <= 1:
            raise ValueError(f"decontamination_threshold: must be in (0, 1] (1 turns it off), got {self.decontamination_threshold}")
        if not 0 <= self.heldout_chunks < 1:
            raise ValueError(f"heldout_chunks: must be in [0, 1) (0: the sets come from the training chunks), got {self.heldout_chunks}")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.benchmark_size < 1 or self.judge_max_tokens < 1:
            raise ValueError("batch_size, max_new_tokens, benchmark_size and judge_max_tokens: must be >= 1")
        if self.judge_max_calls < 0:
            raise ValueError(f"judge_max_calls: must be >= 0 (0: no cap), got {self.judge_max_calls}")
