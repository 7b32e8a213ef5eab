"""Typed configuration of the LoRA SFT stage."""
from __future__ import annotations

from dataclasses import dataclass, field

ADAPTER_MODES = ("restart", "continue")


@dataclass
class TrainConfig:
    lora_r: int = field(default=8, metadata={"help": "LoRA rank.", "check": ">= 1"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r).", "check": ">= 1"})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path.", "check": "[0, 1)"})
    target_modules: str = field(default="all-linear", metadata={"help": "Modules that get adapters: 'all-linear' or a comma-separated list such as 'q_proj,v_proj'."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate.", "check": "> 0"})
    lr_scheduler: str = field(default="linear", metadata={"help": "transformers scheduler name (linear, cosine, constant, ...)."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of steps used for warm-up.", "check": "[0, 1)"})
    epochs: float = field(default=2.0, metadata={"help": "Epochs over the round's training data (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Train for exactly this many steps per round; -1 uses epochs."})
    batch_size: int = field(default=4, metadata={"help": "Per-device batch size.", "check": ">= 1"})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps.", "check": ">= 1"})
    max_length: int = field(default=512, metadata={"help": "Max tokens per example (prompt + answer); longer ones are truncated.", "check": ">= 1"})
    adapter_mode: str = field(default="restart", metadata={"help": "'restart': a fresh adapter each round on all data so far; 'continue': keep training the previous round's adapter on the new round's data.", "choices": ADAPTER_MODES})
    data_mix: str = field(default="auto", metadata={"help": "Which rows each round trains on: 'all' (every round's rows so far), 'new' (this round's only), or a number in (0, 1): this round's rows plus that fraction of earlier rounds' rows, sampled with the run seed. 'auto': all for adapter_mode=restart, new for continue."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the student in 4-bit NF4 (bitsandbytes, CUDA only) and train LoRA on top."})
    launcher: str = field(default="inprocess", metadata={"help": "'inprocess' trains inside the controller; 'accelerate' runs the training step as an `accelerate launch` subprocess (multi-GPU DDP/FSDP) while generation stays in the controller.", "choices": ("inprocess", "accelerate")})
    accelerate_config: str = field(default="", metadata={"help": "accelerate config file for launcher=accelerate, e.g. configs/accelerate/ddp.yaml ('' uses accelerate's default config)."})
    include_context: bool = field(default=False, metadata={"help": "Show the domain chunk to the student in its prompt (open book). Default closed book: the student must learn the domain."})
    padding_free: bool = field(default=False, metadata={"help": "Concatenate each batch into one sequence with position ids instead of padding (trl padding_free): no compute on pad tokens. Exact on this stack (tested); trl does not truncate to max_length in this mode, so keep rows short."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward: less memory for more compute. trl turns it on by default; a small student on a CPU does not need it."})
    logging_steps: int = field(default=5, metadata={"help": "Log the training loss every N steps.", "check": ">= 1"})

    def __post_init__(self):
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps: must be -1 (use epochs) or >= 1, got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise ValueError(f"epochs: must be > 0 when max_steps is -1, got {self.epochs}")
        if self.data_mix not in ("auto", "all", "new"):
            try:
                frac = float(self.data_mix)
            except ValueError:
                frac = -1.0
            if not 0 < frac < 1:
                raise ValueError(f"data_mix: {self.data_mix!r} is not auto, all, new or a number in (0, 1) such as 0.25")
