"""A byte-level BPE tokenizer trained on the strategy world's own text, with a chat template.

Byte-level, so any text round-trips exactly (what the model writes can always be decoded and
re-encoded); trained on the world's prompts, strategies and responses, so its words are single tokens
and a prompt stays short. Numbers are split from punctuation by the byte-level pre-tokenizer, so a
digit is never merged with a brace (`\\boxed{9}` is `\\`, `boxed`, `{`, `9`, `}`).

Wrapped as a `PreTrainedTokenizerFast` with a ChatML-style chat template (`<|im_start|>role\\n ...
<|im_end|>`), `<|im_end|>` as end-of-sequence and `<|endoftext|>` as padding, and saved with
`save_pretrained`, so every later command loads it by path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PAD_TOKEN = "<|endoftext|>"
BOS_TURN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TURN, EOS_TOKEN]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
ROLE_LINES = ["system\n", "user\n", "assistant\n"]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 640):
    """A `PreTrainedTokenizerFast` trained (deterministically) on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) + ROLE_LINES * 2, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def world_texts(records: Iterable[dict], prompt_format) -> list[str]:
    """The text a tokenizer for these records must cover: both prompts of each record and its response."""
    out = []
    for r in records:
        out.append(prompt_format.user_text(r["problem"]))
        if r.get("strategy"):
            out.append(prompt_format.user_text(r["problem"], r["strategy"]))
        out.append(r["response"])
    return out


def save_tokenizer(tokenizer, path: str | Path) -> Path:
    tokenizer.save_pretrained(str(path))
    return Path(path)
