#!/usr/bin/env bash
# Prepares here what scripts/gpu_check.sh needs on a GPU machine that has no network and takes
# at most 64 MiB with the working tree: everything goes to out/gpu (git-ignored; carry it).
#   out/gpu/standins/*.gguf.xz   qwen2.5-coder-0.5b and 1.5b with made-up weights (make_standin.py)
#   out/gpu/llama-cpp-python.tar.xz   llama-cpp-python's source without what a CUDA build never reads
#   out/gpu/wheels/              the Python dependencies, for the GPU machine's Python 3.12
#   out/gpu/cuda/sm_90/          llama-cpp-python built with CUDA for the H100 and H200, where nvcc
#                                is here (CUDA_ARCH=N for another GPU, none to skip; 21-38 min on 2 cores,
#                                once: kept in ~/.cache/hpd-gguf/wheels/gpu-check-sm_90 for later checkouts)
#   out/gpu/docs.jsonl           documents of every category in turn (OA-Mine, else the test set)
#   out/gpu/three.jsonl, out/gpu/examples.jsonl   documents of 3 categories in turn, and labeled
#                                products of the same categories (what examples cost: issue 17)
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_VERSION=0.3.36
GPU_PYTHON=${GPU_PYTHON:-3.12}
[ -x .venv/bin/python ] || scripts/setup.sh
PY=.venv/bin/python
PIP=("$PY" -m pip --disable-pip-version-check -q)
mkdir -p out/gpu/standins out/gpu/wheels
"$PY" -c "import gguf" 2>/dev/null || "${PIP[@]}" install "gguf>=0.17"
for model in qwen2.5-coder-0.5b qwen2.5-coder-1.5b; do
    target=out/gpu/standins/$model.gguf.xz
    [ -f "$target" ] || "$PY" scripts/make_standin.py "$("$PY" -c "from hpd_gguf import models
print(models.resolve('$model', print))" | tail -n1)" "$target"
done
if [ ! -f out/gpu/llama-cpp-python.tar.xz ]; then
    tmp=$(mktemp -d)
    "${PIP[@]}" download --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$LLAMA_VERSION"
    tar -xzf "$tmp"/llama_cpp_python-$LLAMA_VERSION.tar.gz -C "$tmp"
    src=llama_cpp_python-$LLAMA_VERSION
    excluded=(.git docs examples vendor/llama.cpp/{models,docs,benches,tests,examples,.devops,tools/ui})
    excluded+=(vendor/llama.cpp/ggml/src/ggml-{opencl,sycl,vulkan,hexagon,metal,et,cann,musa,hip,webgpu,zdnn,openvino})
    tar -cJf out/gpu/llama-cpp-python.tar.xz -C "$tmp" "${excluded[@]/#/--exclude=$src/}" "$src"
    rm -rf "$tmp"
fi
deps=(pydantic jinja2 click tqdm diskcache typing-extensions)
"${PIP[@]}" download --only-binary=:all: --python-version "$GPU_PYTHON" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d out/gpu/wheels "${deps[@]}"
rm -f out/gpu/wheels/numpy-*.whl  # the GPU machine has numpy
"${PIP[@]}" install --dry-run --ignore-installed --no-index --find-links out/gpu/wheels --only-binary=:all: \
    --python-version "$GPU_PYTHON" --platform manylinux2014_x86_64 --target "$(mktemp -d)" "${deps[@]}" >/dev/null
"$PY" - <<'PY'
import json
from pathlib import Path
from hpd_gguf.bench import interleave
from hpd_gguf.jsonl import load_jsonl
source = Path("../shared/data/oamine_train.jsonl")
records = interleave(load_jsonl(source)) if source.is_file() else load_jsonl("tests/data/products20.jsonl")
keep = ("id", "text", "category", "attributes")
def write(path, rows, fields):
    Path(path).write_text("".join(json.dumps({k: r[k] for k in fields if k in r}, ensure_ascii=False) + "\n"
                                  for r in rows))
write("out/gpu/docs.jsonl", records[:256], keep)
three = [r for r in records if r.get("category") in ("Shoes", "Vitamin", "Coffee", "Vitamins")]
write("out/gpu/three.jsonl", [r for i, r in enumerate(three) if i % 5][:192], keep)
write("out/gpu/examples.jsonl", [r for i, r in enumerate(three) if not i % 5] if source.is_file()
      else load_jsonl("tests/data/examples.jsonl"), keep + ("gold",))
PY
CUDA_ARCH=${CUDA_ARCH:-90}
wheel_dir=out/gpu/cuda/sm_$CUDA_ARCH
if [ "$CUDA_ARCH" != none ] && ! ls "$wheel_dir"/*.whl >/dev/null 2>&1; then
    cached=${HPD_GGUF_WHEELS:-$HOME/.cache/hpd-gguf/wheels}/gpu-check-sm_$CUDA_ARCH  # outlives this checkout
    if ! ls "$cached"/*.whl >/dev/null 2>&1 && command -v nvcc >/dev/null; then
        export CUBLAS_SITE=${CUBLAS_SITE:-$HOME/.cache/hpd-gguf/cublas}
        scripts/cuda_wheel.sh "$PY" --cublas >/dev/null 2>&1 \
            || "${PIP[@]}" install --no-deps --target "$CUBLAS_SITE" "nvidia-cublas==$(nvcc --version | grep -oP 'release \K[0-9]+').*"
        scripts/cuda_wheel.sh "$PY" "$CUDA_ARCH" "$cached"
    fi
    if ls "$cached"/*.whl >/dev/null 2>&1; then
        mkdir -p "$wheel_dir" && cp "$cached"/*.whl "$wheel_dir"/
    fi
fi
size=$(du -sm out/gpu | cut -f1)
echo "out/gpu: $size MiB to carry"
[ "$size" -lt 60 ] || echo "gpu_prepare: out/gpu is over the 64 MiB the GPU machine takes with the tree" >&2
