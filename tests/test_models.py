"""Packaged-model resolution: the offline default models come from PyPI wheels, checked by SHA-256."""
import hashlib

import pytest

from loop.models import PACKAGED, ModelError, assemble_gguf, resolve_model


def test_packaged_table_is_pinned():
    for name, m in PACKAGED.items():
        assert len(m.sha256) == 64 and all(v for _, v, _ in m.parts), name
    assert set(PACKAGED) == {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"}


def test_local_folder_and_hub_ids_pass_through(tiny_model, tmp_path):
    assert resolve_model(tiny_model, tmp_path) == tiny_model
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.integration
def test_smollm2_is_assembled_verified_and_converted(tmp_path):
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    folder = Path(resolve_model("smollm2-135m-instruct", "~/.cache/daig"))
    assert (folder / "daig_converted.json").exists() and (folder / "config.json").exists()
    gguf = assemble_gguf("smollm2-135m-instruct", Path("~/.cache/daig").expanduser())
    assert hashlib.sha256(gguf.read_bytes()).hexdigest() == PACKAGED["smollm2-135m-instruct"].sha256
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")


def test_tampered_file_is_refused(tmp_path, monkeypatch):
    from loop import models

    monkeypatch.setitem(models.PACKAGED, "tiny", models.PackagedModel(parts=(("x", "1", "pkg/f.bin"),), sha256="0" * 64, licence="", note=""))
    monkeypatch.setattr(models, "_open_part", lambda *a: open(__file__, "rb"))
    with pytest.raises(ModelError, match="expected 0000"):
        assemble_gguf("tiny", tmp_path)
    assert not list((tmp_path / "gguf").glob("*")), "no partial file is left behind"
