#!/usr/bin/env bash
# The GPU check (issue 13): every mode on the same documents with 0.5B- and 1.5B-shaped
# stand-ins of qwen2.5-coder, hpd against sequential and against the CPU backend, one table;
# then what labeled examples cost hpd (issue 17), and hpd by tokens per decode and by documents
# in flight (the GPU's defaults).
#   scripts/gpu_prepare.sh    here, first: fills out/gpu (see there)
#   scripts/gpu_check.sh      on the GPU machine, with out/gpu carried: installs the CUDA wheel
#                             prepared here (else builds one: minutes), then checks (minutes)
#   scripts/gpu_check.sh --cpu   the same steps here on the CPU backend, smaller
# It needs no network there.  Figures: BENCHMARKS.md ("On a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$PWD/out/gpu-work  # what the check unpacks, installs and builds: never carried
export PYTHONUNBUFFERED=1  # the log shows each run as it ends
if [ "${1:-}" = --cpu ]; then
    [ -f out/gpu/three.jsonl ] || scripts/gpu_prepare.sh
    PY=.venv/bin/python
    args=(--cpu --limit "${LIMIT:-4}" --max-attributes 3 --max-value-tokens 4 --cpu-documents 4 --examples-limit 6 --sweep 64,128 \
          --batch-tokens 128 --sweep-resident 1,4 --resident-limit 4)
else
    # python3 there is PyTorch's environment (numpy, scikit-build-core, nvidia-cublas): what it
    # lacks goes to a folder of its own, not to a venv, which would not see those
    PY=python3
    site=$WORK/site
    PIP=("$PY" -m pip --disable-pip-version-check -q install --no-index --no-deps --upgrade --target "$site")
    [ -d "$site/pydantic" ] || "${PIP[@]}" out/gpu/wheels/*.whl
    export PYTHONPATH=$site
    export LD_LIBRARY_PATH=$(scripts/cuda_wheel.sh "$PY" --cublas):${CUDA_HOME:-/usr/local/cuda}/lib64:${LD_LIBRARY_PATH:-}
    offloads() { "$PY" -c "import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())"; }
    if ! offloads 2>/dev/null; then
        arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d .)
        # the wheel gpu_prepare.sh built here for this GPU, else one built now (minutes)
        wheel=$(ls out/gpu/cuda/sm_$arch/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)
        [ -n "$wheel" ] && "${PIP[@]}" "$wheel"
        if ! offloads; then
            echo "gpu_check: ${wheel:-no prepared wheel for sm_$arch} does not offload here; building" >&2
            scripts/cuda_wheel.sh "$PY" "$arch" "$WORK/cuda"
            "${PIP[@]}" "$(ls "$WORK"/cuda/llama_cpp_python-*.whl | head -n1)"
            offloads || { echo "gpu_check: the CUDA build does not offload" >&2; exit 1; }
        fi
    fi
    args=(--limit "${LIMIT:-64}" --max-value-tokens 8 --cpu-documents 16 --examples-limit 192 --sweep 256,512,1024,2048 \
          --sweep-resident 16,64,128 --resident-limit 128)
fi
mkdir -p "$WORK/models"
for packed in out/gpu/standins/*.gguf.xz; do
    model=$WORK/models/$(basename "${packed%.xz}")
    [ "$model" -nt "$packed" ] || "$PY" -c "import lzma, shutil, sys
with lzma.open(sys.argv[1]) as f, open(sys.argv[2], 'wb') as out: shutil.copyfileobj(f, out, 1 << 22)" "$packed" "$model"
done
PYTHONPATH=.:${PYTHONPATH:-} "$PY" scripts/gpu_check.py "$WORK"/models/qwen2.5-coder-{0.5b,1.5b}.gguf \
    --docs out/gpu/docs.jsonl --examples-docs out/gpu/three.jsonl --examples out/gpu/examples.jsonl "${args[@]}"
