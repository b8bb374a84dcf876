"""Loading policies and tokenizers by path or hub id.

`load_tokenizer` exists because `AutoTokenizer` in transformers 5 distrusts the saved tokenizer class
of some model types (qwen2 among them) and silently builds the model type's default tokenizer
instead: a locally built word-level tokenizer saved next to a Qwen2 model would come back as a
byte-level BPE with different ids. A folder whose `tokenizer_config.json` declares the generic
`TokenizersBackend` / `PreTrainedTokenizerFast` class is therefore loaded with that class, from its
own `tokenizer.json`; everything else goes through `AutoTokenizer` as usual.
"""

from __future__ import annotations

import json
from pathlib import Path

GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(name_or_path: str, **kwargs):
    folder = Path(name_or_path)
    config = folder / "tokenizer_config.json"
    if config.is_file() and (folder / "tokenizer.json").is_file():
        declared = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
        if declared in GENERIC_TOKENIZER_CLASSES:
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(folder), **kwargs)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
