"""Shared fixtures: a tiny real causal LM built from a config (with a real BPE tokenizer and a ChatML
template), a tiny domain corpus, and the loopback OpenAI-protocol server."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # beside a developer's checkout, never beside a user's clone


def _refuse_shared(event: str, args: tuple) -> None:
    """An audit hook: a test that opens or lists anything under ../shared fails, since a plain clone has none."""
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path == str(SHARED) or path.startswith(str(SHARED) + os.sep):
            raise RuntimeError(f"a test read {path}: vendor what tests need under tests/data (see tests/data/README.md)")


sys.addaudithook(_refuse_shared)
TEST_DATA = Path(__file__).resolve().parent / "data"  # vendored copies (tests/data/README.md)

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

TINY_TEXT = """The Ferncast controller waters eight zones. Hold the Mode button for ten seconds to reset it.
Summarize the passage. Extract every number. Rewrite the sentence politely. Classify the sentiment.
Explain why the sky is blue. What is the capital of France? Answer using only the passage. Be concise.
Here are examples of question answering tasks, on other topics. Write one new task about the passage."""


def build_tiny_model(path: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A real (random-weight) Llama-architecture LM with a trained byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TINY_TEXT] * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>", chat_template=CHATML)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


def write_tiny_corpus(d: Path) -> Path:
    """Two small domain documents (a .md and a .txt) in folder d."""
    d.mkdir(parents=True)
    (d / "a.md").write_text("# Reset\n\nHold the Mode button for ten seconds to reset the controller. The screen flashes blue.\n\n"
                            "The controller waters up to eight zones, or sixteen with the expansion module.\n", encoding="utf-8")
    (d / "b.txt").write_text("Wi-Fi pairing uses the app. Only 2.4 GHz networks are supported.\n\n"
                             "Error E07 means the rain sensor is disconnected. Check the two sensor wires.\n", encoding="utf-8")
    return d


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    return write_tiny_corpus(tmp_path / "corpus")


@pytest.fixture
def fake_openai():
    from openai_server import FakeOpenAI

    with FakeOpenAI() as server:
        yield server
