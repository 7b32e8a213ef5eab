"""The device policy: where every model runs (training, eval, the local teacher, the embedder) and in which dtype.

Resolved here, in loop/, and handed to training/, eval/ and generation/ as plain strings (they never import loop/).
`auto` is CUDA with bf16 (fp16 where the GPU lacks bf16) when there is a GPU, else the CPU in fp32. Half precision
on the CPU is refused: trl's bf16 on a CPU without native bf16 was 10x slower (README, Measured), and fp16 has no
fast CPU kernels either. A CPU with native bf16 (avx512_bf16) can still train in it: training.sft_args.bf16=true.
"""
from __future__ import annotations

import importlib.util

from loop.config import ConfigError, RunConfig


def resolve(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """(device, dtype) as strings torch reads ("cpu" / "cuda" / "cuda:1", "float32" / "bfloat16" / "float16").
    Raises ConfigError (one line naming the field and the fix) when the machine cannot honour what was asked."""
    import torch

    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    elif device.startswith("cuda"):
        count = torch.cuda.device_count() if cuda else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device (torch.cuda.is_available() is False)"
            raise ConfigError(f"device: {device!r} but this machine has {have}; set device=auto or device=cpu")
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    elif device == "cpu" and dtype != "float32":
        raise ConfigError(f"dtype: {dtype} on the CPU is refused (emulated on most CPUs: trl's bf16 measured 10x slower); "
                          "set dtype=float32 or dtype=auto, or device=cuda on a GPU machine")
    return device, dtype


def attention(device: str, dtype: str) -> str:
    """"flash_attention_2" where it is installed and can run (CUDA, half precision); else "": transformers' own choice
    (SDPA where the model supports it, eager where not), as before the policy. Naming "sdpa" would refuse the models
    without it (MPNet, DeBERTa-v2 embedders; Bloom, MPT, GPT-J students)."""
    fast = device.startswith("cuda") and dtype != "float32" and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if fast else ""


def placement(cfg: RunConfig) -> dict[str, str]:
    """The keyword arguments every model loader takes: {device, dtype, attn}. Called at start (the CLI, the controller)
    so a machine that cannot honour the config stops the run before anything is paid, then at each stage's call."""
    device, dtype = resolve(cfg.device, cfg.dtype)
    if cfg.training.load_in_4bit and device == "cpu":
        raise ConfigError("training.load_in_4bit (QLoRA) runs on a GPU but device is cpu; set device=auto or cuda, or "
                          "training.load_in_4bit=false")
    return {"device": device, "dtype": dtype, "attn": attention(device, dtype)}
