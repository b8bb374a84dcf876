"""Prompt construction: the autonomous prompt `x` and the guided prompt `x ⊕ s`.

Both go through the tokenizer's chat template when it has one (as a single user turn, optionally
after a system turn), and are used as plain text otherwise. Data in TRL's formats (a `prompt` column,
`PromptFormat.for_trl_prompts`) is prompted as TRL prompts it: a standard prompt is the text as given,
a conversation goes through the chat template with its own messages, the strategy added to its last
user message. Prompts are tokenized once, without
special tokens added twice, and are never truncated: `tokenize_prompts` raises `PromptTooLongError`
naming the rows that do not fit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

DEFAULT_PROMPT_TEMPLATE = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
DEFAULT_GUIDED_PROMPT_TEMPLATE = (
    "{problem}\n\nA strategy that solves problems of this kind:\n{strategy}\n\n"
    "Please reason step by step, following the strategy, and put your final answer within \\boxed{{}}."
)

# for TRL's `prompt` column: the prompt as given, the strategy block appended to it (for_trl_prompts)
TRL_PROMPT_TEMPLATE = "{problem}"
TRL_GUIDED_PROMPT_TEMPLATE = "{problem}\n\nA strategy that solves problems of this kind:\n{strategy}"

PROMPT_FORMAT_FILE = "prompt_format.json"  # saved next to a model, so evaluation prompts it as it was trained


class PromptTooLongError(ValueError):
    """A prompt does not fit `max_prompt_length`. The message names the rows."""


@dataclass(frozen=True)
class PromptFormat:
    """How problems (and strategies) become prompt text."""

    template: str = DEFAULT_PROMPT_TEMPLATE
    guided_template: str = DEFAULT_GUIDED_PROMPT_TEMPLATE
    system_prompt: str | None = None
    use_chat_template: bool = True
    chat_template_kwargs: dict | None = None  # extra arguments of apply_chat_template (TRL's field, e.g. enable_thinking)

    def __post_init__(self) -> None:
        if "{problem}" not in self.template:
            raise ValueError(f"prompt template must contain '{{problem}}': {self.template!r}")
        for field in ("{problem}", "{strategy}"):
            if field not in self.guided_template:
                raise ValueError(f"guided prompt template must contain {field!r}: {self.guided_template!r}")

    def user_text(self, problem: str, strategy: str | None = None) -> str:
        if strategy is None:
            return self.template.format(problem=problem)
        return self.guided_template.format(problem=problem, strategy=strategy)

    def for_trl_prompts(self, conversational: bool) -> PromptFormat:
        """The format for TRL's `prompt` column: with the default templates, the prompt as given (TRL's
        meaning) and the strategy block appended to it; the chat template for conversations only, as TRL
        (a standard prompt is raw text). Templates set by the user are kept."""
        defaults = (self.template, self.guided_template) == (DEFAULT_PROMPT_TEMPLATE, DEFAULT_GUIDED_PROMPT_TEMPLATE)
        templates = (TRL_PROMPT_TEMPLATE, TRL_GUIDED_PROMPT_TEMPLATE) if defaults else (self.template, self.guided_template)
        return replace(self, template=templates[0], guided_template=templates[1], use_chat_template=conversational)

    def save(self, folder: str | Path) -> Path:
        """Write `folder/prompt_format.json` (read back by `from_file`, `sgpo eval`, `sgpo selectivity`)."""
        path = Path(folder) / PROMPT_FORMAT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> PromptFormat:
        """Read a JSON object with (some of) the fields `template`, `guided_template`, `system_prompt`,
        `use_chat_template`; raises ValueError naming the file."""
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the prompt format ({exc})") from exc
        known = {f.name for f in fields(cls)}
        if not isinstance(obj, dict) or set(obj) - known:
            extra = sorted(set(obj) - known) if isinstance(obj, dict) else "not an object"
            raise ValueError(f"{path}: a prompt format is a JSON object with keys {sorted(known)}; got unknown {extra}")
        return cls(**obj)

    def applies_chat_template(self, tokenizer) -> bool:
        return bool(self.use_chat_template and getattr(tokenizer, "chat_template", None))

    def render(self, tokenizer, problem: str, strategy: str | None = None, conversation: list[dict] | None = None) -> str:
        """The full prompt text the model sees, generation prompt included. `conversation` (TRL's
        conversational format, whose last user message is `problem`): its messages, the last user
        message rendered by the template (the strategy goes there), `system_prompt` only when it has no
        system message of its own."""
        text = self.user_text(problem, strategy)
        if conversation is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError("conversational prompts (lists of messages) need a tokenizer with a chat template")
            messages = [dict(m) for m in conversation]
            last = max(k for k, m in enumerate(messages) if m["role"] == "user")
            messages[last]["content"] = text
            if self.system_prompt and not any(m["role"] == "system" for m in messages):
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return self._chat(tokenizer, messages)
        if self.applies_chat_template(tokenizer):
            messages = []
            if self.system_prompt:
                messages.append({"role": "system", "content": self.system_prompt})
            messages.append({"role": "user", "content": text})
            return self._chat(tokenizer, messages)
        if self.system_prompt:
            text = f"{self.system_prompt}\n\n{text}"
        return text

    def _chat(self, tokenizer, messages: list[dict]) -> str:
        kwargs = self.chat_template_kwargs or {}
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def tokenize_prompts(
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int | None,
    row_names: Sequence[str] | None = None,
    what: str = "prompt",
    add_special_tokens: bool = False,
) -> list[list[int]]:
    """Token ids of each prompt (no truncation). Raises `PromptTooLongError` listing every row that
    exceeds `max_length` (by name, with its length).

    Chat-templated text already carries its special tokens (`add_special_tokens=False`); plain text
    should get the tokenizer's own (e.g. BOS): pass `PromptFormat.applies_chat_template(tok)` negated.
    """
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    if max_length is not None:
        too_long = [(i, len(t)) for i, t in enumerate(ids) if len(t) > max_length]
        if too_long:
            names = row_names or [str(i) for i in range(len(texts))]
            shown = ", ".join(f"row {names[i]} ({n} tokens)" for i, n in too_long[:10])
            more = f" and {len(too_long) - 10} more" if len(too_long) > 10 else ""
            raise PromptTooLongError(
                f"{len(too_long)} {what}(s) exceed max_prompt_length={max_length}: {shown}{more}. "
                "Prompts are never truncated (a cut strategy or problem silently changes the task): raise "
                "max_prompt_length, shorten the strategies, or drop these rows."
            )
    return [list(t) for t in ids]
