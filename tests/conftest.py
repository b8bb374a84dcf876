"""Shared fixtures: a tiny tokenizer and Qwen2 built locally (no downloads), and a trainer whose
rollouts are a fixed function of the prompt, for tests that compare two runs on the same batch."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM logs every engine step at INFO

from sgpo.rollout import Generation, pad  # noqa: E402
from sgpo.testing import build_tiny_model, build_tiny_tokenizer, tiny_arithmetic_rows  # noqa: E402
from sgpo.trainer import SGPOTrainer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    return build_tiny_model(tokenizer)


@pytest.fixture
def rows():
    return tiny_arithmetic_rows(8)


def fixed_completion(tokenizer, prompt: tuple[int, ...], k: int) -> list[int]:
    """A deterministic completion for the k-th copy of `prompt`: some steps, then a boxed number."""
    n = (sum(prompt) * 31 + 7 * k + len(prompt)) % 20
    words = ["step"] * (k % 3) + ["the", "answer", "is", "\\boxed{", str(n), "}"]
    return tokenizer.convert_tokens_to_ids(words) + [tokenizer.eos_token_id]


class FixedRolloutTrainer(SGPOTrainer):
    """SGPOTrainer whose `_generate` returns `fixed_completion` (input injection, not a mock: every
    other step — rewards, advantages, teacher and student passes, loss — is the real code)."""

    def _generate(self, prompt_ids):
        seen: Counter = Counter()
        completions = []
        for p in prompt_ids:
            key = tuple(p)
            completions.append(fixed_completion(self.processing_class, key, seen[key]))
            seen[key] += 1
        tok = self.processing_class
        p_ids, p_mask = pad(prompt_ids, tok.pad_token_id, "left")
        c_ids, c_mask = pad(completions, tok.pad_token_id, "right")
        return Generation(p_ids, p_mask, c_ids, c_mask, tok.batch_decode(completions, skip_special_tokens=True))


def even_answer_reward(prompts, completions, **_):
    """1.0 when the boxed number is even (a deterministic function of the completion)."""
    from sgpo.answers import extract_boxed

    out = []
    for c in completions:
        b = extract_boxed(c)
        out.append(1.0 if b is not None and b.strip().isdigit() and int(b) % 2 == 0 else 0.0)
    return out


def text_length_reward(prompts, completions, **_):
    """1.0 for completions of even character length: varies on a random model's outputs."""
    return [float(len(c) % 2 == 0) for c in completions]


def param_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def require_vllm():
    """The vllm module for the tests that run it. `make test` installs it and sets SGPO_REQUIRE_VLLM=1,
    so there a missing vllm fails the run instead of skipping its tests; elsewhere they are skipped."""
    try:
        import vllm
    except ImportError as exc:
        if os.environ.get("SGPO_REQUIRE_VLLM") == "1":
            raise RuntimeError(f"SGPO_REQUIRE_VLLM=1 but vllm cannot be imported ({exc}): run `make vllm`") from exc
        pytest.skip(f"vllm is not installed ({exc}); `make test` installs it", allow_module_level=True)
    return vllm
