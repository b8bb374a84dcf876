"""Tiny, locally built assets for smoke tests and CPU recipes (no downloads).

`build_tiny_tokenizer()` is a word-level tokenizer with a chat template; `build_tiny_model()` a
random Qwen2 of a few thousand parameters (`build_vllm_tiny_model()`: one whose head dimension vLLM's
CPU attention runs); `tiny_arithmetic_rows()` problems in the data format.
`python -m sgpo.testing DIR` writes all three to DIR (model + tokenizer in DIR/model, problems in
DIR/train.jsonl), for `sgpo train --config recipes/tiny_cpu.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)
_WORDS = (
    "<system> <user> <assistant> </s> what is plus minus times the answer strategy add subtract numbers first second "
    "then write result as please reason step by step and put your final within a . , : ; \\boxed{ } { } = "
    "following solves problems of this kind"
).split()


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for w in _WORDS + [str(d) for d in range(100)]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(tokenizer, hidden_size: int = 32, layers: int = 2, seed: int = 0, tie_word_embeddings: bool = False):
    return _tiny_qwen2(tokenizer, hidden_size, layers, 4, 2, 512, seed, tie_word_embeddings)


def build_vllm_tiny_model(
    tokenizer, layers: int = 2, head_dim: int = 32, heads: int = 2, seed: int = 0, tie_word_embeddings: bool = False,
    max_position_embeddings: int = 512,
):
    """A random Qwen2 that vLLM's CPU attention can run: head_dim ≥ 32 (32, 64, 80, …), hidden size
    heads × head_dim, one key/value head per two query heads (grouped-query attention, as Qwen2)."""
    return _tiny_qwen2(tokenizer, heads * head_dim, layers, heads, max(1, heads // 2), max_position_embeddings, seed, tie_word_embeddings)


def _tiny_qwen2(tokenizer, hidden_size, layers, heads, kv_heads, max_positions, seed, tie_word_embeddings):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def tiny_arithmetic_rows(n: int = 16, with_strategy_every: int = 1) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = (i * 7) % 10, (i * 3 + 1) % 10
        rows.append(
            {
                "id": f"add-{i}",
                "problem": f"what is {a} plus {b}",
                "answer": str(a + b),
                "strategy": "add the first and second numbers then write the result" if i % with_strategy_every == 0 else None,
            }
        )
    return rows


def write_tiny_assets(folder: str | Path, n: int = 16) -> Path:
    from sgpo.data import write_rows

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    write_rows(folder / "train.jsonl", tiny_arithmetic_rows(n))
    return folder


if __name__ == "__main__":  # pragma: no cover
    print(write_tiny_assets(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny"))
