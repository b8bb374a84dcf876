"""Loading policies and tokenizers by path or hub id, LoRA adapter folders included.

A folder holding `adapter_config.json` is a PEFT adapter (a `use_peft` run saves one): `load_model`
loads its base with the adapter merged in, so every command that loads a model accepts one
(`sgpo.adapters` builds adapters and writes merged folders).

`load_tokenizer` exists because `AutoTokenizer` in transformers 5 distrusts the saved tokenizer class
of some model types (qwen2 among them) and silently builds the model type's default tokenizer
instead: a locally built word-level tokenizer saved next to a Qwen2 model would come back as a
byte-level BPE with different ids. A folder whose `tokenizer_config.json` declares the generic
`TokenizersBackend` / `PreTrainedTokenizerFast` class is therefore loaded with that class, from its
own `tokenizer.json`; everything else goes through `AutoTokenizer` as usual.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(ValueError):
    """An adapter folder that cannot be used; the message is one line."""


def is_adapter_folder(path: str | os.PathLike) -> bool:
    """True when `path` is a folder holding a PEFT adapter (`adapter_config.json`)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | os.PathLike) -> str:
    """The base model an adapter folder was trained on (`base_model_name_or_path` of its config)."""
    config_file = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{config_file}: not a readable adapter config ({exc})") from None
    if not base:
        raise AdapterError(f"{config_file}: no base_model_name_or_path; give the base model with --base")
    return str(base)


def load_merged(path: str | os.PathLike, base: str | None = None, dtype="auto"):
    """The base model with the adapter of folder `path` merged into its weights (a plain
    `PreTrainedModel`; `base` overrides the base recorded in the adapter config)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = base or adapter_base(path)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload()


def load_model(name_or_path: str | os.PathLike, **init_kwargs):
    """A causal LM from a folder or hub id, with `init_kwargs` for `from_pretrained` (a `dtype` given
    as a string other than "auto" is read as torch's); an adapter folder is its base with the adapter
    merged in (`load_merged`, in the given dtype)."""
    import torch
    from transformers import AutoModelForCausalLM

    if isinstance(init_kwargs.get("dtype"), str) and init_kwargs["dtype"] != "auto":
        init_kwargs["dtype"] = getattr(torch, init_kwargs["dtype"])
    if is_adapter_folder(name_or_path):
        return load_merged(name_or_path, dtype=init_kwargs.get("dtype", "auto"))
    return AutoModelForCausalLM.from_pretrained(str(name_or_path), **init_kwargs)


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


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (`org/name`): starts like a path, or has more than one `/`."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def model_source_error(name: str, hub_timeout: float = 10.0) -> str | None:
    """Why `name` cannot be loaded as a model, in one line; None when it can (as far as can be told
    without loading it). Cheap: run it before anything slow.

    A local folder must hold `config.json`, or be a LoRA adapter (`adapter_config.json`) whose base
    model can be loaded; a path that does not exist is reported as such. A hub id
    is fine when the Hugging Face cache has it; otherwise, with `HF_HUB_OFFLINE` set it is an error
    at once, and without it the hub is asked about it once (`hub_timeout` seconds at most), so that
    a machine without network fails in a second instead of after a minute of retries.
    """
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and is_adapter_folder(path):  # a LoRA adapter: its base must load
            try:
                base = adapter_base(path)
            except AdapterError as exc:
                return str(exc)
            problem = model_source_error(base, hub_timeout)
            return None if problem is None else f"{name}: the adapter's base model: {problem}"
        if path.is_dir() and not (path / "config.json").is_file():
            return f"{name}: a folder without config.json, not a saved model (save_pretrained writes one)"
        return None
    if _looks_local(name):
        return f"{name}: no such model folder"
    import huggingface_hub
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except HFValidationError:
        return f"{name}: no such model folder, and not a valid hub id (org/name)"
    if constants.HF_HUB_OFFLINE:
        return f"{name}: no such model folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
    try:
        huggingface_hub.model_info(name, timeout=hub_timeout)
    except GatedRepoError:
        return f"{name}: a gated model on the Hugging Face hub; accept its licence on the hub and log in (hf auth login)"
    except RepositoryNotFoundError:
        return f"{name}: no such model folder, and no such model on the Hugging Face hub (or a private one: log in with hf auth login)"
    except Exception as exc:  # noqa: BLE001 - any transport failure: the hub cannot be reached
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return (
            f"{name}: no such model folder, not in the Hugging Face cache, and the hub ({constants.ENDPOINT}) "
            f"cannot be reached ({reason}); give a local folder, or download the model where the hub is reachable"
        )
    return None
