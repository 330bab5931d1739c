"""hpd-gguf: Hyper-Parallel Decoding on llama.cpp for attribute value extraction.

    from hpd_gguf import Extractor
    extractor = Extractor("qwen2.5-coder-0.5b")
    for result in extractor.extract([{"id": "1", "text": "Adidas Men's Ultraboost, Black",
                                      "attributes": ["Brand", "Color"]}]):
        print(result.values)
"""
from .extractor import Extractor
from .jobs import Job, JobCancelled, Progress, QueueFull
from .schema import Attribute, Document, InputError, Result, Schema, Task
from .settings import MODES, Settings

__all__ = ["Extractor", "Settings", "MODES", "Job", "JobCancelled", "Progress", "QueueFull", "Attribute",
           "Document", "InputError", "Result", "Schema", "Task"]
