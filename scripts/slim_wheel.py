#!/usr/bin/env python3
"""Rewrites a llama-cpp-python wheel with one copy of each library, in place.

A wheel holds no links, so llama.cpp's install puts each library in it six times (its name,
its soname and its versioned name, under llama_cpp/lib and again under a stray lib/ beside
headers): 145 MB for a CUDA build for one GPU, over what the GPU machine takes.  What is loaded
is the names ctypes opens (libllama.so, libggml.so) and the sonames they need (lib*.so.0).
"""
import re
import sys
import zipfile
from pathlib import Path

OPENED = {"libllama.so", "libggml.so"}


def kept(name: str) -> bool:
    if name.startswith(("lib/", "include/", "bin/")):
        return False
    if not name.startswith("llama_cpp/lib/"):
        return True
    base = name.rsplit("/", 1)[1]
    return base in OPENED or re.fullmatch(r"lib[\w.+-]+?\.so\.\d+", base) is not None


def slim(path: Path) -> None:
    slimmed = path.with_suffix(".slim")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(slimmed, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in source.infolist():
            if not kept(info.filename):
                continue
            data = source.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if kept(line.split(",", 1)[0])).encode()
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    before, after = path.stat().st_size, slimmed.stat().st_size
    slimmed.replace(path)
    print(f"slim_wheel: {path.name} {before / 2**20:.0f} -> {after / 2**20:.0f} MiB")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        slim(Path(name))
