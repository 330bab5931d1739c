"""hpd-gguf: Hyper-Parallel Decoding on llama.cpp for attribute value extraction.

    from hpd_gguf import Extractor
    extractor = Extractor("qwen2.5-coder-0.5b")
    for result in extractor.extract([{"id": "1", "text": "Adidas Men's Ultraboost, Black",
                                      "attributes": ["Brand", "Color"]}]):
        print(result.values)
"""
from .engine import MODES, Extractor, Settings
from .schema import Attribute, Document, InputError, Result, Schema, Task

__all__ = ["Extractor", "Settings", "MODES", "Attribute", "Document", "InputError", "Result",
           "Schema", "Task"]
