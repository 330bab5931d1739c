#!/usr/bin/env bash
# Builds llama-cpp-python with CUDA from out/gpu's source, for one GPU architecture, without network.
#   scripts/cuda_wheel.sh PYTHON ARCH DEST   a wheel in DEST; ARCH as nvidia-smi's compute_cap
#                                            without the dot (90: H100, H200)
#   scripts/cuda_wheel.sh PYTHON --cublas    the folder of the libcublas it links (LD_LIBRARY_PATH)
# gpu_prepare.sh runs it here, where nvcc is; gpu_check.sh there, when no wheel for its GPU came.
# PYTHON needs scikit-build-core. cuBLAS: the CUDA toolkit's, else pip's nvidia-cublas on
# PYTHON's path or under $CUBLAS_SITE. The CPU part is built for AVX2, not for the building CPU,
# so a wheel built here runs there. Work files go to ${GPU_WORK:-out/gpu-work}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$1
WORK=${GPU_WORK:-$PWD/out/gpu-work}
toolkit=${CUDA_HOME:-/usr/local/cuda}/lib64

cublas_lib() {
    if [ -e "$toolkit/libcublas.so" ]; then echo "$toolkit"; return; fi
    "$PY" -c "import glob, os, sys
paths = sys.path + [os.environ.get('CUBLAS_SITE', '')]
found = sorted(f for p in paths if p for f in glob.glob(os.path.join(p, 'nvidia', '**', 'libcublas.so.*'), recursive=True))
print(os.path.dirname(found[0]) if found else '')"
}

lib=$(cublas_lib)
[ -n "$lib" ] || { echo "cuda_wheel: no cuBLAS (a CUDA toolkit's, or pip's nvidia-cublas; CUBLAS_SITE)" >&2; exit 1; }
if [ "${2:-}" = --cublas ]; then echo "$lib"; exit 0; fi
ARCH=$2
DEST=$3
args="-DGGML_CUDA=on -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=$ARCH-real"
if [ "$lib" != "$toolkit" ]; then  # pip's wheel: its libraries have no unversioned names to link
    mkdir -p "$WORK/cublas"
    ln -sf "$(ls "$lib"/libcublas.so.* | head -n1)" "$WORK/cublas/libcublas.so"
    ln -sf "$(ls "$lib"/libcublasLt.so.* | head -n1)" "$WORK/cublas/libcublasLt.so"
    include=$(dirname "$lib")/include
    args="$args -DCUDA_cublas_LIBRARY=$WORK/cublas/libcublas.so -DCUDA_cublasLt_LIBRARY=$WORK/cublas/libcublasLt.so"
    args="$args -DCMAKE_CUDA_FLAGS=-I$include -DCMAKE_CXX_FLAGS=-I$include"
fi
# without the driver's libcuda.so (nor its stub) to link: ggml's older memory pool instead of VMM
ldconfig -p | grep -q 'libcuda\.so ' || [ -e "$toolkit/stubs/libcuda.so" ] || args="$args -DGGML_CUDA_NO_VMM=ON"
source=$(tar -tJf out/gpu/llama-cpp-python.tar.xz | awk -F/ 'NR == 1 {print $1}')
mkdir -p "$WORK/src" "$DEST"
[ -d "$WORK/src/$source" ] || tar -xJf out/gpu/llama-cpp-python.tar.xz -C "$WORK/src"
isolation=--no-build-isolation
"$PY" -c "import scikit_build_core" 2>/dev/null || isolation=  # here: pip fetches it
echo "cuda_wheel: building $source for sm_$ARCH on $(nproc) cores ($args)" >&2
time CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) SKBUILD_BUILD_DIR="$WORK/build" CMAKE_ARGS="$args" \
    "$PY" -m pip --disable-pip-version-check -q wheel $isolation --no-deps -w "$DEST" "$WORK/src/$source"
"$PY" scripts/slim_wheel.py "$DEST"/llama_cpp_python-*.whl  # one copy of each library: ~24 MiB, not 145
