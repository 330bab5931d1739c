#!/usr/bin/env bash
# Creates .venv with hpd-gguf and its dependencies. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_VERSION=0.3.36
PYTHON=${PYTHON:-python3}
WHEELS=${HPD_GGUF_WHEELS:-$HOME/.cache/hpd-gguf/wheels}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# llama-cpp-python is built from source once and kept in a wheelhouse. On CPUs with AMX the
# build leaves AMX out: ggml's AMX matrix multiply segfaults at the first decode of a Q4_K_M
# model (llama.cpp issue 20824; seen here on a CPU whose AMX tiles work, BENCHMARKS.md).
wheel=$(ls "$WHEELS"/llama_cpp_python-$LLAMA_VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    echo "building llama-cpp-python $LLAMA_VERSION (a few minutes, once)" >&2
    flags=""
    if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
        flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    fi
    mkdir -p "$WHEELS"
    CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'" \
        "${PIP[@]}" wheel --no-deps --no-cache-dir -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
    wheel=$(ls "$WHEELS"/llama_cpp_python-$LLAMA_VERSION-*.whl | head -n1)
fi
"${PIP[@]}" install "$wheel"
"${PIP[@]}" install -e '.[test]'
