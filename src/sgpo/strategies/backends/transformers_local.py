"""Extraction with an in-process Hugging Face model (`transformers`), the CPU fallback.

The extractor model is loaded once; items are generated in batches (`batch_size`) through
`sgpo.rollout.generate_completions`, the same sampler the trainer uses (temperature 0 = greedy). The
prompt goes through the tokenizer's chat template when it has one. No structured-output constraint
is available here; the tolerant parser reads the JSON from the text. One call at a time
(`max_concurrency = 1`): the model is not shared between threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sgpo.modeling import load_tokenizer
from sgpo.prompts import tokenize_prompts
from sgpo.rollout import generate_completions
from sgpo.strategies.base import BatchExtractor, ExtractionError, ExtractionRequest, ExtractorConfigError, Strategy
from sgpo.strategies.parsing import parse_replies
from sgpo.strategies.prompt import DEFAULT_PROMPT_VERSION, get_prompt


def chat_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt text: chat template with generation prompt, or plain "system\\n\\nuser" without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


class TransformersExtractor(BatchExtractor):
    """`TransformersExtractor("path/or/hub-id", device="cpu")`."""

    name = "transformers"
    max_concurrency = 1

    def __init__(
        self,
        model: str,
        *,
        prompt_version: str = DEFAULT_PROMPT_VERSION,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 1024,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "auto",
    ):
        import torch
        from transformers import AutoModelForCausalLM

        if not model:
            raise ExtractorConfigError("the transformers backend needs a model path or hub id (--model)")
        self.model = str(model)
        self.prompt = get_prompt(prompt_version)
        self.prompt_version = self.prompt.version
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = load_tokenizer(self.model)
            self.lm = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype).to(self.device)
        except (OSError, ValueError) as exc:
            raise ExtractorConfigError(f"transformers backend: cannot load {self.model!r} ({exc})") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm.eval()
        self._lock = threading.Lock()

    def extract_batch(self, items: Sequence[ExtractionRequest]) -> list[Strategy | ExtractionError]:
        texts = [chat_prompt(self.tokenizer, self.prompt.messages(it.problem, it.response, it.answer)) for it in items]
        with self._lock:
            # chat-templated text carries its special tokens; plain text gets the tokenizer's own (BOS)
            plain = not getattr(self.tokenizer, "chat_template", None)
            ids = tokenize_prompts(self.tokenizer, texts, max_length=None, add_special_tokens=plain)
            gen = generate_completions(
                self.lm,
                self.tokenizer,
                ids,
                max_new_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                batch_size=self.batch_size,
            )
        lengths = gen.completion_lengths.tolist()
        return parse_replies((text, "length" if n >= self.max_tokens else "stop") for text, n in zip(gen.texts, lengths))
