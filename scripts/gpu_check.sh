#!/usr/bin/env bash
# The GPU check (issue 13): every mode on the same documents with 0.5B- and 1.5B-shaped
# stand-ins of qwen2.5-coder, hpd against sequential and against the CPU backend, one table;
# then what labeled examples cost hpd (issue 17).
#   scripts/gpu_prepare.sh    here, first: fills out/gpu (see there)
#   scripts/gpu_check.sh      on the GPU machine, with out/gpu carried: builds llama-cpp-python
#                             with CUDA (once; kept in out/gpu/venv), then checks (~2 min)
#   scripts/gpu_check.sh --cpu   the same steps here on the CPU backend, smaller
# It needs no network there.  Figures: BENCHMARKS.md ("On a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --cpu ]; then
    [ -f out/gpu/three.jsonl ] || scripts/gpu_prepare.sh
    PY=.venv/bin/python
    args=(--cpu --limit "${LIMIT:-4}" --max-attributes 3 --max-value-tokens 4 --cpu-documents 4 --examples-limit 6)
else
    venv=out/gpu/venv
    [ -x $venv/bin/python ] || python3 -m venv --system-site-packages $venv
    PY=$venv/bin/python
    PIP=("$PY" -m pip --disable-pip-version-check -q)
    "${PIP[@]}" install --no-index --find-links out/gpu/wheels pydantic jinja2 click tqdm diskcache typing-extensions
    # cuBLAS: the toolkit's, else the one pip installed beside PyTorch (nvidia/cu13/lib)
    cublas=$(ls -d "${CUDA_HOME:-/usr/local/cuda}"/lib64/libcublas.so 2>/dev/null || "$PY" -c "import glob, os, sys
print(next(iter(sorted(f for p in sys.path for f in glob.glob(os.path.join(p, 'nvidia', '**', 'libcublas.so.*'),
                                                             recursive=True))), ''))")
    cmake_args="-DGGML_CUDA=on -DLLAVA_BUILD=OFF -DCMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-native}"
    # no libcuda.so to link against (no driver stub): ggml's legacy memory pool instead of VMM
    ldconfig -p | grep -q 'libcuda\.so ' || ls "${CUDA_HOME:-/usr/local/cuda}"/lib64/stubs/libcuda.so >/dev/null 2>&1 \
        || cmake_args="$cmake_args -DGGML_CUDA_NO_VMM=ON"
    case "$cublas" in
        "") echo "gpu_check: no cuBLAS found (CUDA toolkit or pip's nvidia-cublas)" >&2; exit 1 ;;
        */lib64/libcublas.so) ;;
        *) lib=$(dirname "$cublas") include=$(dirname "$(dirname "$cublas")")/include
           mkdir -p out/gpu/cublas
           ln -sf "$cublas" out/gpu/cublas/libcublas.so
           ln -sf "$(ls "$lib"/libcublasLt.so.* | head -n1)" out/gpu/cublas/libcublasLt.so
           cmake_args="$cmake_args -DCUDA_cublas_LIBRARY=$PWD/out/gpu/cublas/libcublas.so"
           cmake_args="$cmake_args -DCUDA_cublasLt_LIBRARY=$PWD/out/gpu/cublas/libcublasLt.so"
           cmake_args="$cmake_args -DCMAKE_CUDA_FLAGS=-I$include -DCMAKE_CXX_FLAGS=-I$include"
           export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-} ;;
    esac
    if ! "$PY" -c "import llama_cpp" 2>/dev/null; then
        mkdir -p out/gpu/build
        [ -d out/gpu/build/llama_cpp_python-0.3.36 ] || tar -xJf out/gpu/llama-cpp-python.tar.xz -C out/gpu/build
        echo "building llama-cpp-python with CUDA ($cmake_args) on $(nproc) cores" >&2
        time CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="$cmake_args" \
            "${PIP[@]}" wheel --no-build-isolation --no-deps -w out/gpu/build out/gpu/build/llama_cpp_python-0.3.36
        "${PIP[@]}" install --no-index --no-deps out/gpu/build/llama_cpp_python-*.whl
    fi
    args=(--limit "${LIMIT:-64}" --max-value-tokens 8 --cpu-documents 16 --examples-limit 192)
fi
mkdir -p out/gpu/models
for packed in out/gpu/standins/*.gguf.xz; do
    model=out/gpu/models/$(basename "${packed%.xz}")
    [ "$model" -nt "$packed" ] || "$PY" -c "import lzma, shutil, sys
with lzma.open(sys.argv[1]) as f, open(sys.argv[2], 'wb') as out: shutil.copyfileobj(f, out, 1 << 22)" "$packed" "$model"
done
PYTHONPATH=. "$PY" scripts/gpu_check.py out/gpu/models/qwen2.5-coder-0.5b.gguf out/gpu/models/qwen2.5-coder-1.5b.gguf \
    --docs out/gpu/docs.jsonl --examples-docs out/gpu/three.jsonl --examples out/gpu/examples.jsonl "${args[@]}"
