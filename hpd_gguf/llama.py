"""The one module that touches llama.cpp (through llama-cpp-python's ctypes bindings).

Model: weights, vocabulary, tokenizer, metadata.  Context: the unified KV cache, decode,
logits as numpy views, sequence memory operations.  Batch: a llama_batch filled from Python.
"""
from __future__ import annotations

import ctypes
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import llama_cpp as C

GGUF_MAGIC = b"GGUF"


class LlamaError(RuntimeError):
    """llama.cpp refused a model, a context or a batch."""


_initialised = False


def _init_backend() -> None:
    global _initialised
    if not _initialised:
        if not os.environ.get("HPD_GGUF_LLAMA_LOG"):
            C.llama_log_set(_silent_log, ctypes.c_void_p())
        C.llama_backend_init()
        _initialised = True


@C.llama_log_callback
def _silent_log(level, text, user_data):  # llama.cpp logs only when HPD_GGUF_LLAMA_LOG is set
    pass


def supports_gpu_offload() -> bool:
    _init_backend()  # first: asking loads the GPU backend, which logs
    return bool(C.llama_supports_gpu_offload())


def offloaded_layers(requested: int) -> int:
    """Layers to offload: all (-1) where the build can offload, else none."""
    if requested < 0:
        return 999 if supports_gpu_offload() else 0
    return requested


def system_info() -> str:
    """The backend llama.cpp was built for, with its CPU features."""
    _init_backend()
    return C.llama_print_system_info().decode().strip(" |")


def gpu_backends_built() -> list[str]:
    """The GPU backends llama.cpp was built with (CUDA, ...), whether a device is visible or not."""
    return [part.split(" : ")[0] for part in system_info().split(" | ") if " : " in part and not part.startswith("CPU")]


def why_no_offload() -> str:
    """Why layers stay on the CPU, where they do."""
    built = gpu_backends_built()
    if built:
        return f"this llama-cpp-python was built with {', '.join(built)}, but sees no GPU (its driver?)"
    return "this llama-cpp-python has no GPU support (scripts/setup.sh with HPD_GGUF_GPU=cuda builds one)"


@dataclass
class Device:
    name: str
    description: str
    kind: str  # cpu, gpu, accelerator
    free_bytes: int
    total_bytes: int


def devices() -> list[Device]:
    """The devices ggml can compute on, with their memory (ggml's backend registry)."""
    _init_backend()
    ggml = ctypes.CDLL(str(Path(C.__file__).parent / "lib" / "libggml.so"))
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(ggml, name).restype = ctypes.c_char_p
        getattr(ggml, name).argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    size = ctypes.POINTER(ctypes.c_size_t)
    ggml.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, size, size]
    found = []
    for i in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        ggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        kind = {0: "cpu", 1: "gpu"}.get(ggml.ggml_backend_dev_type(device), "accelerator")
        found.append(Device(ggml.ggml_backend_dev_name(device).decode(),
                            ggml.ggml_backend_dev_description(device).decode(), kind, free.value, total.value))
    return found


def physical_cores() -> int:
    """Physical cores (threads beyond them slow llama.cpp down on CPU)."""
    try:
        cores = set()
        block: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            if ":" in line:
                key, value = line.split(":", 1)
                block[key.strip()] = value.strip()
            elif block:
                cores.add((block.get("physical id"), block.get("core id", block.get("processor"))))
                block = {}
        count = len(cores)
    except OSError:
        count = 0
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(count or available or 1, available or 1))


QUANTIZATIONS = {"q4_0": C.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": C.LLAMA_FTYPE_MOSTLY_Q8_0}


def quantize(source: Path, target: Path, kind: str = "q4_0", threads: int | None = None) -> None:
    """Write `source` requantized to `kind` (formats llama.cpp repacks for AVX2/AVX-512 CPUs)."""
    _init_backend()
    params = C.llama_model_quantize_default_params()
    params.nthread = threads or physical_cores()
    params.ftype = QUANTIZATIONS[kind]
    params.allow_requantize = True
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # processes may race to make it
    status = C.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
    if status != 0:
        partial.unlink(missing_ok=True)
        raise LlamaError(f"llama.cpp could not requantize {source} to {kind} (status {status})")
    os.replace(partial, target)


def check_gguf(path: Path) -> None:
    """Clear errors for files llama.cpp would only log about."""
    if not path.is_file():
        raise LlamaError(f"model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise LlamaError(f"{path} is not a GGUF file")
    version, = struct.unpack("<I", head[4:8])
    if version not in (2, 3):
        raise LlamaError(f"{path}: unsupported GGUF version {version}")


class Model:
    """Weights and vocabulary of one GGUF file."""

    def __init__(self, path: str | os.PathLike, n_gpu_layers: int = 0):
        _init_backend()
        self.path = Path(path)
        self.n_gpu_layers = n_gpu_layers
        check_gguf(self.path)
        params = C.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self._model = C.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            raise LlamaError(f"llama.cpp could not load {self.path} (truncated or corrupt GGUF?)")
        self._vocab = C.llama_model_get_vocab(self._model)
        self.n_vocab = C.llama_vocab_n_tokens(self._vocab)
        self.bos = C.llama_vocab_bos(self._vocab)
        self.add_bos = bool(C.llama_vocab_get_add_bos(self._vocab))
        self.n_ctx_train = C.llama_model_n_ctx_train(self._model)
        self.n_params = C.llama_model_n_params(self._model)
        self._pieces: list[bytes] | None = None

    def close(self) -> None:
        if getattr(self, "_model", None):
            C.llama_model_free(self._model)
            self._model = None

    __del__ = close

    def metadata(self, key: str) -> str | None:
        size = C.llama_model_meta_val_str(self._model, key.encode(), None, 0)
        if size < 0:
            return None
        buffer = ctypes.create_string_buffer(size + 1)
        C.llama_model_meta_val_str(self._model, key.encode(), buffer, size + 1)
        return buffer.value.decode("utf-8", errors="replace")

    @property
    def chat_template(self) -> str | None:
        return self.metadata("tokenizer.chat_template")

    def metadata_token(self, key: str) -> str:
        """The text of a token named in the metadata (for example `tokenizer.ggml.eos_token_id`)."""
        value = self.metadata(key)
        return self.piece(int(value)).decode("utf-8", errors="replace") if value else ""

    def tokenize(self, text: str, parse_special: bool = False) -> list[int]:
        """Tokens of `text`, no BOS added; special-token text stays plain unless parse_special."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (C.llama_token * capacity)()
        count = C.llama_tokenize(self._vocab, data, len(data), tokens, capacity, False, parse_special)
        if count < 0:
            raise LlamaError(f"tokenization failed for {len(data)} bytes")
        return tokens[:count]

    def piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = C.llama_token_to_piece(self._vocab, token, buffer, 64, 0, True)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = C.llama_token_to_piece(self._vocab, token, buffer, -size, 0, True)
        return buffer.raw[:size]

    @property
    def pieces(self) -> list[bytes]:
        """Every token's bytes (built once)."""
        if self._pieces is None:
            self._pieces = [self.piece(token) for token in range(self.n_vocab)]
        return self._pieces

    def is_control(self, token: int) -> bool:
        attr = C.llama_vocab_get_attr(self._vocab, token)
        return bool(attr & (C.LLAMA_TOKEN_ATTR_CONTROL | C.LLAMA_TOKEN_ATTR_USER_DEFINED))

    def end_of_generation_mask(self) -> np.ndarray:
        return np.fromiter((C.llama_vocab_is_eog(self._vocab, t) for t in range(self.n_vocab)),
                           dtype=bool, count=self.n_vocab)


class Batch:
    """A llama_batch whose arrays are numpy views; each token may carry several sequences."""

    def __init__(self, capacity: int, max_seqs_per_token: int = 1):
        self.capacity = capacity
        self.max_seqs = max_seqs_per_token
        self._batch = C.llama_batch_init(capacity, 0, max_seqs_per_token)
        b = self._batch
        self.token = np.ctypeslib.as_array(b.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(b.pos, shape=(capacity,))
        self.n_seq_id = np.ctypeslib.as_array(b.n_seq_id, shape=(capacity,))
        self.logits = np.ctypeslib.as_array(b.logits, shape=(capacity,))
        self._seq_rows = [np.ctypeslib.as_array(b.seq_id[i], shape=(max_seqs_per_token,))
                          for i in range(capacity)]
        self.size = 0
        self.n_outputs = 0

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            C.llama_batch_free(self._batch)
            self._batch = None

    __del__ = close

    def clear(self) -> None:
        self.size = 0
        self.n_outputs = 0

    @property
    def free(self) -> int:
        return self.capacity - self.size

    def add(self, tokens, start_pos: int, seq_ids, logits_last: bool) -> int:
        """Append consecutive tokens of the given sequences; returns the output row of the last
        token when logits_last, else -1."""
        n = len(tokens)
        if n == 0:
            return -1
        if self.size + n > self.capacity:
            raise LlamaError(f"batch overflow: {self.size} + {n} > {self.capacity}")
        if not 0 < len(seq_ids) <= self.max_seqs:
            raise LlamaError(f"a token may carry 1 to {self.max_seqs} sequences, not {len(seq_ids)}")
        s, e = self.size, self.size + n
        if n == 1:  # a branch's next token, most rows of a step: item by item is 4x faster than slices
            self.token[s], self.pos[s], self.n_seq_id[s], self.logits[s] = tokens[0], start_pos, len(seq_ids), 0
        else:
            self.token[s:e] = tokens
            self.pos[s:e] = np.arange(start_pos, start_pos + n, dtype=np.int32)
            self.n_seq_id[s:e] = len(seq_ids)
            self.logits[s:e] = 0
        for row in self._seq_rows[s:e]:
            for i, seq in enumerate(seq_ids):
                row[i] = seq
        self.size = e
        if not logits_last:
            return -1
        self.logits[e - 1] = 1
        self.n_outputs += 1
        return self.n_outputs - 1

    def view(self, start: int, stop: int) -> C.llama_batch:
        """The tokens [start, stop) as a llama_batch sharing these arrays."""
        b = self._batch
        offset = lambda pointer, kind: ctypes.cast(  # noqa: E731
            ctypes.addressof(pointer.contents) + start * ctypes.sizeof(kind), ctypes.POINTER(kind))
        return C.llama_batch(
            n_tokens=stop - start, token=offset(b.token, C.llama_token), embd=None,
            pos=offset(b.pos, C.llama_pos), n_seq_id=offset(b.n_seq_id, ctypes.c_int32),
            seq_id=ctypes.cast(ctypes.addressof(b.seq_id.contents) + start * ctypes.sizeof(ctypes.c_void_p),
                               ctypes.POINTER(ctypes.POINTER(C.llama_seq_id))),
            logits=offset(b.logits, ctypes.c_int8))


class Context:
    """An inference context with one KV cache shared (unified) by all sequences."""

    def __init__(self, model: Model, n_ctx: int, n_batch: int, n_seq_max: int = 1,
                 n_threads: int | None = None, flash_attention: bool = True, kv_f32: bool = False,
                 n_ubatch: int | None = None):
        if not 1 <= n_seq_max <= 256:
            raise LlamaError(f"n_seq_max must be 1..256, not {n_seq_max}")
        self.model = model
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_ubatch or n_batch, n_batch)
        params.n_seq_max = n_seq_max
        params.n_outputs_max = max(n_batch, n_seq_max)  # llama.cpp asserts outputs <= this
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = n_threads or physical_cores()
        params.flash_attn_type = (C.LLAMA_FLASH_ATTN_TYPE_AUTO if flash_attention
                                  else C.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.no_perf = True
        # a model kept on the CPU stays there: else a GPU build moves large batches' products there
        params.op_offload = model.n_gpu_layers != 0
        if kv_f32:
            params.type_k = params.type_v = C.GGML_TYPE_F32
        self._ctx = C.llama_init_from_model(model._model, params)
        if not self._ctx:
            raise LlamaError(f"llama.cpp could not create a context of {n_ctx} KV cells (n_batch={n_batch}): "
                             "not enough memory? A smaller --n-ctx or --max-resident needs less")
        self.n_ctx = C.llama_n_ctx(self._ctx)
        self.n_batch = C.llama_n_batch(self._ctx)
        self.n_ubatch = C.llama_n_ubatch(self._ctx)
        self.n_seq_max = C.llama_n_seq_max(self._ctx)
        self.n_threads = params.n_threads
        self._memory = C.llama_get_memory(self._ctx)
        self.decode_calls = 0
        self.tokens_decoded = 0
        self.outputs_decoded = 0  # tokens whose logits were computed
        self.decode_seconds = 0.0  # inside llama_decode and the logits' fetch (on a GPU: its wait too)
        self._earlier_logits: list[np.ndarray] = []  # of the pieces decoded before the last (no KV slot for all)
        self._last_outputs = 0  # logits rows of the last piece decoded, not fetched yet

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            C.llama_free(self._ctx)
            self._ctx = None

    __del__ = close

    def decode(self, batch: Batch) -> np.ndarray:
        """Decode the whole batch; returns its logits (n_outputs, n_vocab), a view valid until
        the next decode."""
        self.submit(batch)
        return self.logits()

    def submit(self, batch: Batch) -> None:
        """Start decoding the whole batch; `logits()` waits for it.  On a GPU, llama_decode
        returns once the work is queued, so the host can go on meanwhile; on a CPU it returns
        when it is done.  When llama.cpp finds no KV slot, halves of the batch are tried."""
        if batch.size > self.n_batch:
            raise LlamaError(f"batch of {batch.size} tokens exceeds n_batch={self.n_batch}")
        start = time.perf_counter()
        self._earlier_logits, self._last_outputs = [], 0
        try:
            if batch.size:
                self._decode_range(batch, 0, batch.size)
        except LlamaError:
            self._roll_back(batch)
            raise
        finally:
            self.decode_seconds += time.perf_counter() - start

    def logits(self) -> np.ndarray:
        """The logits of the batch submitted last (n_outputs, n_vocab), once its decode is done:
        a view valid until the next decode."""
        start = time.perf_counter()
        parts = self._earlier_logits + ([self._fetch_logits(self._last_outputs)] if self._last_outputs else [])
        self.decode_seconds += time.perf_counter() - start  # on a GPU: the wait
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty((0, self.model.n_vocab), np.float32)

    def _decode_range(self, batch: Batch, start: int, stop: int) -> None:
        status = C.llama_decode(self._ctx, batch.view(start, stop))
        if status == 0:
            self.decode_calls += 1
            self.tokens_decoded += stop - start
            self._last_outputs = int(batch.logits[start:stop].sum())
            self.outputs_decoded += self._last_outputs
            return
        if status == 1 and stop - start > 1:  # no KV slot: try smaller pieces
            middle = (start + stop) // 2
            self._decode_range(batch, start, middle)
            if self._last_outputs:  # kept before the next piece's decode overwrites them
                self._earlier_logits.append(self._fetch_logits(self._last_outputs).copy())
                self._last_outputs = 0
            self._decode_range(batch, middle, stop)
            return
        raise LlamaError(f"llama_decode returned {status} for {stop - start} tokens"
                         + (" (KV cache full)" if status == 1 else ""))

    def _roll_back(self, batch: Batch) -> None:
        """Remove what a failed decode left of the batch, so that a failure changes nothing."""
        first: dict[int, int] = {}
        for i in range(batch.size):
            for seq in batch._seq_rows[i][: batch.n_seq_id[i]]:
                first[int(seq)] = min(first.get(int(seq), 1 << 30), int(batch.pos[i]))
        for seq, pos in first.items():
            C.llama_memory_seq_rm(self._memory, seq, pos, -1)

    def _fetch_logits(self, n_outputs: int) -> np.ndarray:
        pointer = C.llama_get_logits(self._ctx)  # waits for the decode
        return np.ctypeslib.as_array(pointer, shape=(n_outputs, self.model.n_vocab))

    # sequence memory (metadata operations in a unified cache)
    def seq_cp(self, source: int, target: int, p0: int = -1, p1: int = -1) -> None:
        C.llama_memory_seq_cp(self._memory, source, target, p0, p1)

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        if not C.llama_memory_seq_rm(self._memory, seq, p0, p1):
            raise LlamaError(f"could not remove positions [{p0}, {p1}) of sequence {seq}")

    def seq_pos_max(self, seq: int) -> int:
        return C.llama_memory_seq_pos_max(self._memory, seq)

    def clear(self) -> None:
        C.llama_memory_clear(self._memory, True)
