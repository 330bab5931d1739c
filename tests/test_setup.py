"""The wheel the GPU check carries (scripts/slim_wheel.py), slimmed from this llama-cpp-python's."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def installed_wheel() -> Path:
    distribution = importlib.metadata.distribution("llama_cpp_python")
    url = json.loads(distribution.read_text("direct_url.json") or "{}").get("url", "")
    path = Path(url.removeprefix("file://"))
    if not url.startswith("file://") or path.suffix != ".whl" or not path.is_file():
        pytest.skip("llama-cpp-python was not installed from a wheel file (scripts/setup.sh does)")
    return path


def test_a_slimmed_wheel_holds_each_library_once_and_still_loads_a_model(tmp_path, model_path):
    source = installed_wheel()
    wheel = tmp_path / source.name
    shutil.copy(source, wheel)
    subprocess.run([sys.executable, str(ROOT / "scripts/slim_wheel.py"), str(wheel)], check=True)

    names = zipfile.ZipFile(wheel).namelist()
    libraries = [n for n in names if ".so" in n]
    assert libraries and all(n.startswith("llama_cpp/lib/") for n in libraries)
    assert not any(n.endswith((".so.0.25.3", ".so.0.5.0")) for n in libraries)
    assert {"llama_cpp/lib/libllama.so", "llama_cpp/lib/libggml.so", "llama_cpp/lib/libggml-base.so.0"} <= set(names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "-q", "install", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True)
    probe = ("import llama_cpp; from hpd_gguf.llama import Model; "
             f"assert llama_cpp.__file__.startswith({str(site)!r}), llama_cpp.__file__; "
             f"print(len(Model({str(model_path)!r}, 0).tokenize('Brand: Nike')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0


def test_setup_without_a_compiler_says_what_to_install(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CXX": "no-such-c++", "HPD_GGUF_WHEELS": str(tmp_path / "wheels"),
                               "HPD_GGUF_VENV": str(tmp_path / "venv")})
    assert done.returncode == 1
    assert done.stderr.startswith("building llama-cpp-python needs a C/C++ compiler, and no-such-c++ is not found")
    assert "apt install build-essential" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "venv").exists()  # nothing made


def test_setup_with_an_old_python_says_so_before_anything_is_built(tmp_path):
    old = tmp_path / "python3.8"
    old.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.8.10" && exit 0\nexit 1\n')  # sys.exit(1)
    old.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": str(old), "HPD_GGUF_VENV": str(tmp_path / "venv")})
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"hpd-gguf needs Python 3.10 or newer, and {old} is Python 3.8.10: name another")
