"""The engine's settings: the one place their defaults live (the CLI builds its options from here)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

MODES = ("hpd", "hpd-static", "sequential", "naive", "json")
EXAMPLE_CHOICES = ("fixed", "similar")
DEFAULT_POSITIONS = 16384  # per sequence, unless n_ctx says otherwise
CPU_RESIDENT_CELLS = 3072  # measured: BENCHMARKS.md, "Titles with descriptions"


def _option(default, help: str, cli: bool = True, least: int | None = None):
    return field(default=default, metadata={"help": help, "cli": cli, "least": least})


@dataclass
class Settings:
    mode: str = _option("hpd", "Decoding strategy.", cli=False)
    max_value_tokens: int = _option(24, "Tokens per value at most.", least=1)
    threads: int | None = _option(None, "CPU threads [default: physical cores].", least=1)
    n_gpu_layers: int = _option(-1, "Layers offloaded to a GPU (0: all the work on the CPU) [default: all, "
                                    "where llama.cpp was built with one].", least=-1)
    batch_tokens: int = _option(512, "Tokens per llama_decode (n_batch).", least=1)
    ubatch_tokens: int = _option(512, "Tokens per compute graph (n_ubatch); small values make every "
                                      "mode use the same kernels.", least=1)
    n_seq_max: int = _option(256, "Sequence ids of the KV cache (llama.cpp allows 256).", cli=False, least=2)
    max_resident: int = _option(64, "Documents in flight at once (hpd).", least=1)
    max_resident_cells: int = _option(-1, "KV cells the documents in flight may hold, their branches' "
                                          f"included (hpd; 0: no limit) [default: {CPU_RESIDENT_CELLS} on a CPU, "
                                          "no limit where layers run on a GPU].", least=-1)
    n_ctx: int = _option(0, "KV cells [default: sized from the work].", least=0)
    truncate: bool = _option(False, "Cut documents longer than the context (with a warning).", cli=False)
    json_tokens_per_attribute: int = _option(0, "json mode: answer tokens per attribute "
                                                "[default: max value tokens + 8].", cli=False, least=0)
    # The best measured on the dev folds (QUALITY.md): values outside the text and unsure values
    # become null.  `none` and 0 turn them off.
    constraint: str | None = _option("span", "Constraint for attributes whose schema names none (none: no "
                                             "constraint).")
    min_confidence: float = _option(0.5, "Values less confident than this become null (0: keep all; not in "
                                         "json mode).")
    examples_per_category: int = _option(4, "Labeled examples shown per category (--examples, schema "
                                            "'examples'; 0: the built-in generic ones).", least=0)
    example_choice: str = _option("fixed", "fixed: examples shared by a category's documents (those stating the "
                                           "most attributes asked, of the group nearest each document); similar: "
                                           "the most similar per document.")
    example_groups: int = _option(4, "Groups of similar labeled documents per category (fixed choice; 1: the "
                                     "same examples for all its documents).", least=1)
    flash_attention: bool = _option(True, "Flash attention.", cli=False)
    kv_f32: bool = _option(False, "Keep the KV cache in f32.", cli=False)
    max_queued: int = _option(4096, "Documents waiting at most, over all jobs (serve: 429 past it).",
                              cli=False, least=1)

    def __post_init__(self):
        if self.constraint == "none":
            self.constraint = None
        if self.example_choice not in EXAMPLE_CHOICES:
            raise ValueError(f"unknown example choice {self.example_choice!r}; choose from {', '.join(EXAMPLE_CHOICES)}")
        for f in fields(self):
            value, least = getattr(self, f.name), f.metadata["least"]
            if least is not None and value is not None and value < least:
                raise ValueError(f"{f.name} must be {least} or more, not {value}")
        if self.n_seq_max > 256:
            raise ValueError(f"n_seq_max must be 256 or less (llama.cpp), not {self.n_seq_max}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")


def resident_cells(requested: int, n_gpu_layers: int) -> int:
    """The cell budget of the documents in flight: on a CPU each decoding token attends over
    every occupied cell, so fewer cells pay; on a GPU it is not measured yet."""
    if requested < 0:
        return 0 if n_gpu_layers else CPU_RESIDENT_CELLS
    return requested


def shows_labeled_examples(schema, examples_per_category: int) -> bool:
    """Whether documents are shown labeled examples of their category (the schema has some)."""
    return examples_per_category > 0 and schema is not None and bool(schema.examples)


def cli_fields():
    """The settings `run`, `bench` and `serve` take as options."""
    return [f for f in fields(Settings) if f.metadata.get("cli")]
