"""Supervised training on completions: `Example` (prompt tokens, completion tokens) and
`completion_nll`, the loss of the strategy world's warm-up and SFT baseline (`sgpo.world.warmup`) and
of the tiny model's warm-up (`sgpo.testing`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sgpo.rollout import pad


@dataclass
class Example:
    prompt: list[int]
    completion: list[int]  # response tokens + end-of-sequence


def completion_nll(model, examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, int]:
    """(sum of the completion tokens' negative log-likelihood, number of completion tokens)."""
    seqs = [e.prompt + e.completion for e in examples]
    ids, mask = pad(seqs, pad_id, "right")
    labels = torch.full_like(ids, -100)
    for i, e in enumerate(examples):
        start = len(e.prompt)
        labels[i, start : start + len(e.completion)] = torch.as_tensor(e.completion)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="sum")
    return nll, int((target != -100).sum())
