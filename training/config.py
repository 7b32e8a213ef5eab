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
    padding_free: bool = field(default=True, metadata={"help": "Concatenate each batch into one sequence with position ids instead of padding (trl padding_free): no compute or memory on pad tokens. Exact on this stack (tested); rows are cut to max_length as padded training cuts them."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward: less memory for more compute. trl turns it on by default; a small student on a CPU does not need it."})
    logging_steps: int = field(default=5, metadata={"help": "Log the training loss every N steps.", "check": ">= 1"})
    sft_args: dict = field(default_factory=dict, metadata={"help": "Any other trl SFTConfig field, passed as it is, e.g. {optim: adamw_torch_fused, weight_decay: 0.01, neftune_noise_alpha: 5, bf16: true}. Checked against SFTConfig's fields (did-you-mean); a field a typed knob above sets, or one the loop owns (output_dir, seed, save_strategy, completion_only_loss, report_to), is refused with the knob to use."})
    lora_args: dict = field(default_factory=dict, metadata={"help": "Any other peft LoraConfig field, e.g. {use_dora: true, use_rslora: true, modules_to_save: [lm_head], bias: lora_only}. Checked against LoraConfig's fields; r, lora_alpha, lora_dropout and target_modules are the typed knobs above. Applies when a fresh adapter is made (adapter_mode continue keeps the first round's)."})

    def __post_init__(self):
        problems = passthrough_problems(self.sft_args, "sft_args", "trl", "SFTConfig", SFT_TYPED, SFT_OWNED) + \
            passthrough_problems(self.lora_args, "lora_args", "peft", "LoraConfig", LORA_TYPED, LORA_OWNED)
        if problems:
            raise ValueError("; ".join(problems))
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


# The SFTConfig / LoraConfig fields the typed knobs set (field -> knob), and the ones the loop itself owns.
SFT_TYPED = {"per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum", "learning_rate": "learning_rate",
             "lr_scheduler_type": "lr_scheduler", "warmup_steps": "warmup_ratio", "warmup_ratio": "warmup_ratio", "num_train_epochs": "epochs",
             "max_steps": "max_steps", "max_length": "max_length", "logging_steps": "logging_steps", "padding_free": "padding_free",
             "activation_checkpointing": "gradient_checkpointing", "gradient_checkpointing": "gradient_checkpointing"}
SFT_OWNED = ("output_dir", "seed", "save_strategy", "completion_only_loss", "report_to")
LORA_TYPED = {"r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout", "target_modules": "target_modules"}
LORA_OWNED = ("task_type",)


def passthrough_problems(args: dict, name: str, package: str, cls_name: str, typed: dict, owned: tuple) -> list[str]:
    """Each key of sft_args / lora_args that is not a field of the trl / peft class (with a did-you-mean), that a typed
    knob sets, or that the loop owns. The class is imported only when there is something to check."""
    if not isinstance(args, dict):
        return [f"{name}: expected a mapping of {cls_name} fields, got {args!r}"]
    if not args:
        return []
    import dataclasses
    import difflib
    import importlib

    fields = [f.name for f in dataclasses.fields(getattr(importlib.import_module(package), cls_name))]
    problems = []
    for key in args:
        if key in typed:
            problems.append(f"{name}.{key}: set training.{typed[key]} instead")
        elif key in owned:
            problems.append(f"{name}.{key}: set by the loop, not settable")
        elif key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            problems.append(f"{name}.{key}: not a {package} {cls_name} field" + (f"; did you mean '{close[0]}'?" if close else ""))
    return problems
