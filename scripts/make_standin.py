#!/usr/bin/env python3
"""A stand-in for a GGUF model, small enough to carry: the same architecture, shapes, tokenizer
and chat template, with made-up weights, compressed with xz.

The GPU check (scripts/gpu_check.sh) runs where the real models cannot go (no network, 64 MiB
carried).  Every 2-D weight becomes Q4_0 blocks (about the real Q4_K_M's bytes per weight, so
the GPU reads as much) taken in turn from one pseudo-random tile of a prime number of blocks,
larger than any matrix has rows: no two rows of a matrix are alike, and the file compresses to
about the tile.  Norms are ones (the output norm larger, for clear winners), other 1-D
tensors small.

    python scripts/make_standin.py models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf out/gpu/standins/qwen2.5-coder-0.5b.gguf.xz
"""
import argparse
import lzma
import shutil
import tempfile
from pathlib import Path

import gguf
import numpy as np

Q4_0 = gguf.GGMLQuantizationType.Q4_0
BLOCK, BLOCK_BYTES = gguf.GGML_QUANT_SIZES[Q4_0]  # 32 weights in 2 + 16 bytes
TILE_BLOCKS = 160_001  # a prime above 151,936, the Qwen2.5 vocabulary (the embedding's rows)
SCALE = 0.02  # each weight is (nibble - 8) * ±SCALE
OUTPUT_NORM = 8.0  # logits spread ~8x wider than with ones: a random model's near-ties made rare


def tile(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = np.empty((TILE_BLOCKS, BLOCK_BYTES), np.uint8)
    scales = np.where(rng.random(TILE_BLOCKS) < 0.5, -SCALE, SCALE).astype(np.float16)  # weights of mean 0
    blocks[:, :2] = scales.view(np.uint8).reshape(-1, 2)
    blocks[:, 2:] = rng.integers(0, 256, (TILE_BLOCKS, BLOCK_BYTES - 2), dtype=np.uint8)
    return blocks.reshape(-1)


def standin_tensor(name: str, shape: list[int], pattern: np.ndarray) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """The made-up data for a tensor of GGUF shape (ne0, ne1, ...), and its type."""
    dims = [int(n) for n in reversed(shape)]  # numpy order
    if len(dims) >= 2 and dims[-1] % BLOCK == 0:
        byte_dims = dims[:-1] + [dims[-1] // BLOCK * BLOCK_BYTES]
        return np.resize(pattern, int(np.prod(byte_dims))).reshape(byte_dims), Q4_0
    if name.endswith("norm.weight"):  # the last one sharpens the logits: clear winners, few near-ties
        return np.full(dims, OUTPUT_NORM if name == "output_norm.weight" else 1.0, np.float32), gguf.GGMLQuantizationType.F32
    return (np.resize(np.linspace(-0.05, 0.05, 997, dtype=np.float32), int(np.prod(dims))).reshape(dims),
            gguf.GGMLQuantizationType.F32)


def make_standin(source: Path, target: Path) -> None:
    reader = gguf.GGUFReader(source)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "standin.gguf"
        writer = gguf.GGUFWriter(plain, arch)
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            value = field.contents()
            if field.name == gguf.Keys.General.FILE_TYPE:
                value = gguf.LlamaFileType.MOSTLY_Q4_0
            elif field.name == gguf.Keys.General.NAME:
                value = f"{value} (stand-in: made-up weights)"
            writer.add_key_value(field.name, value, value_type, sub_type=sub_type)
        pattern = tile()
        tensors = [(t.name, *standin_tensor(t.name, list(t.shape), pattern)) for t in reader.tensors]
        for name, data, kind in tensors:
            writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, data, _ in tensors:
            writer.write_tensor_data(data)
        writer.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(plain, "rb") as f, lzma.open(target, "wb", preset=6) as out:
            shutil.copyfileobj(f, out, 1 << 22)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the real model (.gguf)")
    parser.add_argument("target", type=Path, help="where the stand-in goes (.gguf.xz)")
    args = parser.parse_args()
    make_standin(args.source, args.target)
    print(f"{args.target}: {args.target.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
