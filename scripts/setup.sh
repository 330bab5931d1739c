#!/usr/bin/env bash
# Creates .venv with hpd-gguf and its dependencies. Safe to run again: it only adds what is missing.
#
#   HPD_GGUF_GPU=cuda|metal|vulkan   build llama.cpp for that GPU backend (CUDA is tested)
#   HPD_GGUF_CPU=avx2                a portable CPU build without AVX-512 (what an AVX2-only CPU runs)
#   HPD_GGUF_EXTRAS=test,server,ray  optional dependencies to install with the package
#   HPD_GGUF_VENV=.venv              where the environment goes
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_VERSION=0.3.36
PYTHON=${PYTHON:-python3}
VENV=${HPD_GGUF_VENV:-.venv}
WHEELS=${HPD_GGUF_WHEELS:-$HOME/.cache/hpd-gguf/wheels}
GPU=${HPD_GGUF_GPU:-}
CPU=${HPD_GGUF_CPU:-native}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "hpd-gguf needs Python 3.10 or newer, and $PYTHON is $("$PYTHON" --version 2>/dev/null || echo 'not found'):" \
         "name another with PYTHON (PYTHON=python3.12 $0)" >&2
    exit 1
fi

# What the build turns on. The wheel cache is keyed by it, so a CPU wheel is never reused where a
# GPU one is asked for, nor a native wheel on another CPU. The multimodal library (llava/mtmd) is
# never loaded by hpd-gguf, so it is not built.
args="-DLLAVA_BUILD=OFF"
cflags=""
case "$GPU" in
    "") ;;
    cuda) args="$args -DGGML_CUDA=on"
          if [ -n "${CMAKE_CUDA_ARCHITECTURES:-}" ]; then  # a wheel per architecture
              args="$args -DCMAKE_CUDA_ARCHITECTURES=$CMAKE_CUDA_ARCHITECTURES"
              backend="cuda-sm${CMAKE_CUDA_ARCHITECTURES//[^0-9a-z]/_}"
          fi ;;
    metal) args="$args -DGGML_METAL=on" ;;
    vulkan) args="$args -DGGML_VULKAN=on" ;;
    *) echo "HPD_GGUF_GPU=$GPU: expected cuda, metal or vulkan" >&2; exit 1 ;;
esac
case "$CPU" in
    native)
        # ggml's AMX matrix multiply segfaults at the first decode of a Q4_K_M model (llama.cpp
        # issue 20824; seen here on a CPU whose AMX tiles work, BENCHMARKS.md): leave AMX out.
        if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
            cflags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        fi
        simd=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | grep -oE 'avx[0-9a-z_]*|fma|f16c|amx[a-z_0-9]*' | sort -u | tr '\n' ' ')
        key="native-$(printf '%s' "$simd" | cksum | cut -d' ' -f1)" ;;
    avx2)
        args="$args -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
        args="$args -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
        args="$args -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
        key="avx2" ;;
    *) echo "HPD_GGUF_CPU=$CPU: expected native or avx2" >&2; exit 1 ;;
esac
key="${backend:-${GPU:-cpu}}-$key"

wheel=$(ls "$WHEELS/$key"/llama_cpp_python-$LLAMA_VERSION-*.whl 2>/dev/null | head -n1 || true)
for compiler in "${CC:-cc}" "${CXX:-c++}"; do  # before anything is made, where a build is needed
    if [ -z "$wheel" ] && ! command -v "$compiler" >/dev/null; then
        echo "building llama-cpp-python needs a C/C++ compiler, and $compiler is not found: install one" \
             "(Debian/Ubuntu: sudo apt install build-essential; Fedora: sudo dnf install gcc-c++;" \
             "macOS: xcode-select --install), or name it with CC and CXX" >&2
        exit 1
    fi
done

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if [ -z "$wheel" ]; then
    echo "building llama-cpp-python $LLAMA_VERSION for $key (a few minutes, once)" >&2
    mkdir -p "$WHEELS/$key"
    CMAKE_ARGS="${CMAKE_ARGS:-} $args -DCMAKE_C_FLAGS='$cflags' -DCMAKE_CXX_FLAGS='$cflags'" \
        "${PIP[@]}" wheel --no-deps --no-cache-dir -w "$WHEELS/$key" "llama-cpp-python==$LLAMA_VERSION"
    wheel=$(ls "$WHEELS/$key"/llama_cpp_python-$LLAMA_VERSION-*.whl | head -n1)
    "$VENV/bin/python" scripts/slim_wheel.py "$wheel"  # each library once, no stray lib/ in site-packages
fi
# Reinstall when the venv holds another build of the same version (pip would keep it).
installed=$("$VENV/bin/python" -c 'import json, importlib.metadata as m
d = m.distribution("llama_cpp_python"); print(json.loads(d.read_text("direct_url.json") or "{}").get("url", ""))' 2>/dev/null || true)
if [ "$installed" != "file://$wheel" ]; then
    "${PIP[@]}" install --force-reinstall --no-deps "$wheel"
    "${PIP[@]}" install "$wheel"
fi
"${PIP[@]}" install -e ".[${HPD_GGUF_EXTRAS:-test}]"
