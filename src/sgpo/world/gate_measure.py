"""The measurements behind the gate's criteria (`sgpo.world.gate`) that need a model or the world's
data: autonomous pass rates (C1), the teacher's token statistics on guided rollouts (C4) and the
shortcuts a policy could take without the procedure (C5)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sgpo.prompts import tokenize_prompts
from sgpo.rollout import generate_completions
from sgpo.world.evaluate import heldout_accuracy
from sgpo.world.families import METHOD_PREFIX, Instance, get_family, parse_numbers, world_of
from sgpo.world.prompt import WORLD_PROMPT_FORMAT


def pass_rates(model, tokenizer, records: Sequence[Mapping[str, Any]], *, samples: int, temperature: float = 1.0,
               seed: int = 0, max_new_tokens: int = 64, batch_size: int = 256) -> list[float]:  # fmt: skip
    """Each record's autonomous pass rate: the share of `samples` completions at `temperature` that are right."""
    out = heldout_accuracy(model, tokenizer, records, modes=("auto",), samples=samples, temperature=temperature, seed=seed,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, per_record=True)  # fmt: skip
    return [float(v) for v in out["correct"]["auto"]]


def method_span(text: str) -> tuple[int, int] | None:
    """Character span of the method phrase of a world solution (`method : <phrase> .`), or None."""
    if not text.startswith(METHOD_PREFIX):
        return None
    end = text.find(" .", len(METHOD_PREFIX))
    return (len(METHOD_PREFIX), end) if end > len(METHOD_PREFIX) else None


def critical_flags(tokenizer, ids: Sequence[int]) -> list[bool]:
    """For each token of a completion, whether it overlaps the method phrase of the decoded text."""
    ends = [len(tokenizer.decode(ids[: j + 1])) for j in range(len(ids))]  # character end of each token
    span = method_span(tokenizer.decode(ids))
    return [span is not None and s < span[1] and span[0] < e for s, e in zip([0, *ends[:-1]], ends)]


@torch.no_grad()
def teacher_token_stats(model, tokenizer, records: Sequence[Mapping[str, Any]], *, seed: int = 0, temperature: float = 1.0,
                        max_new_tokens: int = 64) -> dict[str, Any]:  # fmt: skip
    """One guided rollout per record, sampled at `temperature` from `model` with the record's strategy,
    scored token by token (teacher q_t: the guided prompt; student p_t: the autonomous one):
    `kl` KL(q_t ‖ p_t) and `nll` −log p_t(ỹ_t) on every token, `noncritical_entropy` H(q_t) on every
    token outside the method phrase (the strategy-critical span), and `critical_kl_share` (the KL mass
    on the method phrase over its share of the tokens); `token_ids` and `critical` are every token's id
    and whether it is in the method phrase, in the order of `kl` (scripts/teacher_token_kinds.py
    splits the figures by kind of token)."""
    fmt = WORLD_PROMPT_FORMAT
    guided = tokenize_prompts(tokenizer, [fmt.render(tokenizer, r["problem"], r["strategy"]) for r in records], max_length=None)
    auto = tokenize_prompts(tokenizer, [fmt.render(tokenizer, r["problem"]) for r in records], max_length=None)
    torch.manual_seed(seed)
    gen = generate_completions(model, tokenizer, guided, max_new_tokens=max_new_tokens, temperature=temperature)
    kl, nll, entropy, critical, token_ids = [], [], [], [], []
    model.eval()
    for i, text in enumerate(gen.texts):
        ids = gen.completion_ids[i, : int(gen.completion_lengths[i])].tolist()  # the sampled tokens (EOS included)
        flags = critical_flags(tokenizer, ids)

        def logp(prompt: list[int]) -> torch.Tensor:
            x = torch.tensor([prompt + ids])
            logits = model(input_ids=x).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(ids)].float()
            return logits.log_softmax(-1)  # (C, V)

        q, p = logp(guided[i]), logp(auto[i])
        kl += (q.exp() * (q - p)).sum(-1).clamp(min=0).tolist()
        nll += (-p.gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1)).tolist()
        h = -(q.exp() * q).sum(-1)
        entropy += [float(v) for v, c in zip(h, flags) if not c]
        critical += flags
        token_ids += ids
    total = sum(kl)
    crit_mass = sum(v for v, c in zip(kl, critical) if c) / total if total > 0 else None
    crit_tokens = sum(critical) / len(critical) if critical else None
    return {"kl": kl, "nll": nll, "noncritical_entropy": entropy, "rollouts": len(records), "tokens": len(kl),
            "critical_token_share": crit_tokens, "critical_kl_share": crit_mass, "token_ids": token_ids,
            "critical": critical}  # fmt: skip


def shortcut_stats(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], float]:
    """(per family, the share of its records whose answer is the family's most common answer; the share
    of (record, other family of its world) pairs where the other family's procedure gives the record's
    answer: a wrong procedure right by coincidence)."""
    answers: dict[str, list[str]] = {}
    hits = pairs = 0
    for r in records:
        answers.setdefault(r["family"], []).append(str(r["answer"]))
        inst = Instance(tuple(parse_numbers(r["problem"])))
        if get_family(r["family"]).has_target:
            continue  # the question's target belongs to this family only
        for other in world_of(r["family"]):
            if other.name != r["family"] and not other.has_target:
                pairs += 1
                hits += int(str(other.answer(inst)) == str(r["answer"]))
    majority = {f: Counter(a).most_common(1)[0][1] / len(a) for f, a in sorted(answers.items())}
    return majority, hits / pairs if pairs else 0.0
