"""A tiny Qwen2-style causal LM created from a config (no download), for the strategy world.

`ModelSpec` holds the few numbers that matter; the defaults give ~0.9 M parameters with the world's
~600-token vocabulary (tied input/output embeddings). The model is saved with `save_pretrained` (plus
its generation config: `<|im_end|>` ends a completion) so every later command loads it by path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sgpo.world.prompt import WORLD_PROMPT_FORMAT


@dataclass(frozen=True)
class ModelSpec:
    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(tokenizer, spec: ModelSpec = ModelSpec(), seed: int = 0):
    """A freshly initialised `Qwen2ForCausalLM` sized for `tokenizer` (deterministic for `seed`)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        use_sliding_window=False,
        attention_dropout=0.0,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model


def num_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer, path: str | Path) -> Path:
    """Model, generation config, tokenizer and the world's prompt format (`prompt_format.json`) in one
    folder, loadable by `from_pretrained(path)`; `sgpo eval` / `sgpo selectivity` then prompt it the
    way it was trained."""

    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    WORLD_PROMPT_FORMAT.save(path)
    return Path(path)


def has_saved_model(path: str | Path) -> bool:
    """Whether folder `path` holds the weights `save_model` writes (one safetensors file, or the index
    of a sharded one): a run restored from records (`sgpo.world.experiment_records`) has none."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

    return any((Path(path) / name).is_file() for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME))


def load_model(path: str | Path):
    """(model, tokenizer) from a folder written by `save_model`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path))
