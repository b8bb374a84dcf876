"""A byte-level BPE tokenizer trained on the strategy world's own text, with a chat template.

Byte-level, so any text round-trips exactly (what the model writes can always be decoded and
re-encoded); trained on the world's prompts, strategies and responses, so its words are single tokens
and a prompt stays short.

Its normaliser and pre-tokeniser are exactly Qwen2's (NFC; Qwen2's split regex, in which every digit
is its own piece; byte-level): `AutoTokenizer.from_pretrained` on a folder that also holds a Qwen2
model config builds a `Qwen2Tokenizer`, which re-creates Qwen2's pipeline around the saved vocabulary
and merges whatever `tokenizer.json` says, and a tokenizer trained with any other pre-tokeniser would
then split text differently from the one the model was trained with. With Qwen2's own pipeline the
tokenizer is the same however it is loaded (and a digit is never merged with anything).

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
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
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
