"""LoRA adapters through PEFT (docs/scaling.md, "LoRA").

With `use_peft: true` the trainer wraps the policy in a PEFT LoRA model built from TRL's field names
(`lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`, …, read by TRL's own
`get_peft_config`). Teacher and student are the same adapted model, only the adapter parameters
train, and with `beta > 0` the reference policy is the base model with the adapters disabled (as in
TRL) instead of a copy. A run saves the adapter (`adapter_config.json` + `adapter_model.safetensors`,
with the tokenizer and `prompt_format.json`); `merge_adapter` (`sgpo merge ADAPTER --out DIR`) writes
a plain model folder. Reading adapter folders (`is_adapter_folder`, `adapter_base`, `load_merged`) is
`sgpo.modeling`'s: every command that loads a model (`sgpo eval`, `sgpo selectivity`, `sgpo train`)
accepts an adapter folder and merges it on load.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sgpo.modeling import AdapterError, adapter_base, load_merged, load_tokenizer
from sgpo.prompts import PROMPT_FORMAT_FILE


def apply_lora(model, args, zero3: bool = False, peft_config=None):
    """`model` wrapped in a fresh LoRA adapter from `args` (TRL's `ModelConfig` field names; see
    `SGPOConfig`). Only the adapter parameters (and `lora_modules_to_save`) train.

    peft_config: a PEFT `LoraConfig` to use instead of the `lora_*` fields (`SGPOTrainer(peft_config=...)`, as TRL).
    zero3: DeepSpeed ZeRO-3 is on; the adapter is then kept in the base model's dtype (ZeRO-3
    gathers mixed-dtype parameters wrongly; TRL does the same). Raises `AdapterError` when the LM
    head is a target: SGPO reads the head's weight directly, so an adapter on it would never train.
    """
    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer
    from trl.trainer.utils import get_peft_config

    base_path = getattr(model, "name_or_path", None) or model.config._name_or_path
    peft_model = get_peft_model(model, peft_config or get_peft_config(args), autocast_adapter_dtype=not zero3)
    if isinstance(peft_model.get_output_embeddings(), BaseTunerLayer):
        raise AdapterError(
            "lora_target_modules includes the LM head: SGPO computes log-probabilities from the head's weight "
            "directly, so an adapter on it would never train; leave the head out (e.g. lora_target_modules: all-linear)"
        )
    if base_path and Path(base_path).is_dir():  # a local base: recorded as an absolute path, found from any folder
        for config in peft_model.peft_config.values():
            config.base_model_name_or_path = str(Path(base_path).resolve())
    return peft_model


def merge_adapter(path: str | os.PathLike, out: str | os.PathLike, base: str | None = None, dtype="auto") -> Path:
    """Write the base model with the adapter of folder `path` merged in to folder `out` (weights,
    config, tokenizer, `prompt_format.json`): a model folder any tool loads without PEFT."""
    out = Path(out)
    model = load_merged(path, base, dtype)
    model.save_pretrained(out)
    tokenizer_source = path if (Path(path) / "tokenizer_config.json").is_file() else (base or adapter_base(path))
    load_tokenizer(str(tokenizer_source)).save_pretrained(out)
    if (Path(path) / PROMPT_FORMAT_FILE).is_file():
        shutil.copyfile(Path(path) / PROMPT_FORMAT_FILE, out / PROMPT_FORMAT_FILE)
    return out
