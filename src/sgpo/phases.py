"""The rollout of one generation batch, as a chain of named phases (docs/algorithm.md, "One step").

    plan → sample → score → advantages → weights and selection → micro-batches → no-grad passes

`SGPOTrainer._generate_and_score` runs them in this order. Each is a function over tensors (rows
of completions, problem-major) that can be tested and replaced on its own, here, except two that
drive a model or a service and so are hooks elsewhere: "sample" is the trainer's `_generate`
(Hugging Face `generate`, or vLLM) and "score" calls the reward functions (`sgpo.rewards.RewardFunctions`);
the no-grad passes use `completion_hidden` / `no_grad_hidden` from here. Shapes: B problems in this
process's share of the generation batch, n sampled completions (per problem `num_generations`
autonomous ones, then `num_guided_generations` guided ones if it has a strategy), C completion
positions, S micro-batches, H hidden size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch
from accelerate.utils import gather_object

from sgpo.objectives import (
    GlobalCounts,
    InstanceWeightEMA,
    LossInputs,
    SamplerCorrectionStats,
    group_relative_advantages,
    head_functions,
    instance_weights,
    sampler_correction,
    sampler_correction_stats,
    select_rows,
)
from sgpo.rollout import Generation, pad

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------- rows


@dataclass
class Packed:
    """Rows of prompt ⊕ completion for one forward pass: prompts left-padded, completions right-padded."""

    prompt_ids: Tensor  # (R, P)
    prompt_mask: Tensor  # (R, P)
    completion_ids: Tensor  # (R, C)
    completion_mask: Tensor  # (R, C)

    @property
    def num_rows(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device) -> Packed:
        return Packed(*(getattr(self, f.name).to(device) for f in fields(self)))

    def rows(self, index: Tensor | slice) -> Packed:
        return Packed(*(getattr(self, f.name)[index] for f in fields(self)))


def trim(ids: Tensor, mask: Tensor, side: str) -> tuple[Tensor, Tensor]:
    """Drop the columns that are padding in every row (leading ones for "left", trailing for "right");
    at least one column is kept. (R, L), (R, L) -> (R, L')"""
    used = mask.any(0).nonzero().squeeze(1)
    if used.numel() == 0:
        return ids[:, :1], mask[:, :1]
    if side == "left":
        return ids[:, int(used[0]) :], mask[:, int(used[0]) :]
    return ids[:, : int(used[-1]) + 1], mask[:, : int(used[-1]) + 1]


def pack(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor) -> Packed:
    """Rows of left-padded prompts and right-padded completions, trimmed of all-padding columns."""
    p, pm = trim(prompt_ids, prompt_mask, "left")
    c, cm = trim(completion_ids, completion_mask, "right")
    return Packed(p, pm, c, cm)


# ---------------------------------------------------------------------------------------- 1. plan


@dataclass
class RolloutPlan:
    """What to sample: n prompts, problem-major (per problem Ga copies of x, then Gg copies of x ⊕ s)."""

    prompt_ids: list[list[int]]  # n prompts
    prompt_texts: list[str]  # n rendered prompts (what the model saw; the log_completions table shows them)
    owner: Tensor  # (n,) long, the problem of each row
    guided: Tensor  # (n,) bool
    problem_prompts: tuple[Tensor, Tensor]  # (B, P) left-padded autonomous prompts x and their mask
    num_problems: int
    num_generations: int


def plan_rollouts(
    prompt_ids: Sequence[Sequence[int]],
    prompt_texts: Sequence[str],
    guided_ids: Sequence[Sequence[int] | None],
    guided_texts: Sequence[str],
    num_generations: int,
    num_guided_generations: int,
    pad_id: int,
) -> RolloutPlan:
    """The sampling plan of B problems; a problem whose `guided_ids` is None gets no guided rows."""
    B = len(prompt_ids)
    has = (
        torch.tensor([g is not None for g in guided_ids], dtype=torch.bool)
        if num_guided_generations
        else torch.zeros(B, dtype=torch.bool)
    )
    per_problem = num_generations + num_guided_generations * has.long()  # (B,)
    owner = torch.repeat_interleave(torch.arange(B), per_problem)  # (n,)
    # position of each row inside its problem's block: the first Ga are autonomous
    starts = torch.cumsum(per_problem, 0) - per_problem
    guided = (torch.arange(len(owner)) - starts[owner]) >= num_generations
    ids: list[list[int]] = []
    texts: list[str] = []
    for i in range(B):
        ids += [list(prompt_ids[i])] * num_generations
        texts += [prompt_texts[i]] * num_generations
        if has[i]:
            ids += [list(guided_ids[i])] * num_guided_generations
            texts += [guided_texts[i]] * num_guided_generations
    return RolloutPlan(ids, texts, owner, guided, pad(prompt_ids, pad_id, "left"), B, num_generations)


# ---------------------------------------------------------------------------------------- 2. sample


def completion_facts(gen: Generation, eos: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(lengths (n,), truncated (n,) bool): a completion is truncated when it does not end in EOS."""
    lengths = gen.completion_mask.sum(1)
    last = gen.completion_ids.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    ends = torch.isin(last, torch.tensor(list(eos) or [-1])) & (lengths > 0)
    return lengths, ~ends


def with_strong_responses(
    plan: RolloutPlan, sampled: Generation, off_policy: Tensor, responses: Sequence[Sequence[int]], tokenizer
) -> Generation:
    """The whole generation batch for LUFFY's mixed groups: the rows where `off_policy` (n,) is False
    are `sampled`'s (in order), the others get their problem's strong response (token ids, EOS
    included; `responses` is indexed by problem). An inserted row has no sampler log-probs (NaN)."""
    n = len(plan.prompt_ids)
    sampled_rows = (~off_policy).nonzero().squeeze(1).tolist()
    lengths = sampled.completion_mask.sum(1).tolist()
    completions: list[list[int]] = [[] for _ in range(n)]
    texts = [""] * n
    for k, j in enumerate(sampled_rows):
        completions[j] = sampled.completion_ids[k, : lengths[k]].tolist()
        texts[j] = sampled.texts[k]
    for j in off_policy.nonzero().squeeze(1).tolist():
        completions[j] = list(responses[int(plan.owner[j])])
        texts[j] = tokenizer.decode(completions[j], skip_special_tokens=True)
    pad_id = tokenizer.pad_token_id
    p_ids, p_mask = pad(plan.prompt_ids, pad_id, "left")
    c_ids, c_mask = pad(completions, pad_id, "right", length=max([len(c) for c in completions] + [1]))
    sampler = None
    if sampled.sampler_logps is not None:
        sampler = torch.full(c_ids.shape, float("nan"))
        C = min(sampled.sampler_logps.shape[1], c_ids.shape[1])
        sampler[sampled_rows, :C] = sampled.sampler_logps[:, :C]
    return Generation(p_ids, p_mask, c_ids, c_mask, texts, sampler_logps=sampler)


def first_autonomous_rows(plan: RolloutPlan) -> Tensor:
    """(n,) bool: each problem's first autonomous row (the slot LUFFY gives the strong response)."""
    first = torch.ones(len(plan.owner), dtype=torch.bool)
    first[1:] = plan.owner[1:] != plan.owner[:-1]
    return first


# ---------------------------------------------------------------------------------------- 3. score


@dataclass
class GroupStats:
    """Per-problem outcomes of the rollouts. (B,) each; the guided ones are 0 where `has_guided` is False."""

    correct: Tensor  # (n,) bool: reward ≥ correct_reward_threshold
    acc_auto: Tensor
    acc_guided: Tensor
    reward_auto: Tensor
    reward_guided: Tensor
    has_guided: Tensor  # bool


def group_stats(rewards: Tensor, plan: RolloutPlan, threshold: float, correct_values: Tensor | None = None) -> GroupStats:
    """Accuracies and mean rewards of the autonomous and the guided group of each problem. A completion
    is correct when its `correct_values` (n,) — the correctness reward's, `sgpo.rewards` — is at least
    `threshold` (its total reward when None; NaN, a function's None, is not correct)."""
    correct = (rewards if correct_values is None else correct_values) >= threshold
    B = plan.num_problems

    def mean_over(rows: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        count = torch.bincount(plan.owner[rows], minlength=B)
        total = torch.zeros(B).index_add_(0, plan.owner[rows], values[rows].float())
        return total / count.clamp(min=1), count

    acc_auto, _ = mean_over(~plan.guided, correct)
    reward_auto, _ = mean_over(~plan.guided, rewards)
    acc_guided, n_guided = mean_over(plan.guided, correct)
    reward_guided, _ = mean_over(plan.guided, rewards)
    return GroupStats(correct, acc_auto, acc_guided, reward_auto, reward_guided, n_guided > 0)


@dataclass
class Rollout:
    """The phases "plan", "sample" and "score" of a batch of problems: what the rows are, the
    completions, their rewards (n,), each reward function's (n, F) (NaN: None), and the per-problem stats."""

    plan: RolloutPlan
    gen: Generation
    off_policy: Tensor | None  # (n,) bool: LUFFY's strong-response rows
    lengths: Tensor  # (n,)
    truncated: Tensor  # (n,) bool
    rewards: Tensor
    per_func: Tensor
    stats: GroupStats


# ---------------------------------------------------------------------------------------- 4. advantages


def global_advantages(auto_rewards: Tensor, accelerator, num_generations: int, scale_rewards: str) -> tuple[Tensor, Tensor]:
    """Group-relative advantages over the rewards of every process (a batch-scaled std is global, as in
    TRL): (this process's share (B·Ga,), the rewards of every process (P·B·Ga,))."""
    gathered = accelerator.gather(auto_rewards.to(accelerator.device)).cpu()
    advantages = group_relative_advantages(gathered, num_generations, scale_rewards)
    n, rank = len(auto_rewards), accelerator.process_index
    return advantages[rank * n : (rank + 1) * n], gathered


# ---------------------------------------------------------------------------------------- 5. weights and selection


def problem_weights(stats: GroupStats, mode: str) -> Tensor:
    """w_i (B,) from the accuracies (0 for problems without guided rollouts); docs/algorithm.md §6."""
    raw = instance_weights(mode, stats.acc_auto, stats.acc_guided).float()
    return torch.where(stats.has_guided, raw, torch.zeros_like(raw))


def smoothed_problem_weights(
    stats: GroupStats, problems: Sequence[dict], mode: str, ema: InstanceWeightEMA, accelerator
) -> Tensor:
    """w_i (B,), smoothed by the per-problem EMA when it is on. The EMA sees the problems of every
    process, so its state is the same on every rank (and in every checkpoint)."""
    weights = problem_weights(stats, mode)
    if ema.decay == 0.0:
        return weights
    ids = [str(p["id"]) for p in problems]
    device = accelerator.device
    if accelerator.num_processes > 1:
        ids = gather_object(ids)
    all_w = accelerator.gather(weights.to(device)).cpu()
    has = accelerator.gather(stats.has_guided.long().to(device)).cpu().bool()
    smoothed = torch.zeros_like(all_w)
    if has.any():
        smoothed[has] = ema([ids[i] for i in has.nonzero().squeeze(1).tolist()], all_w[has])
    n, rank = len(problems), accelerator.process_index
    return smoothed[rank * n : (rank + 1) * n]


@dataclass
class Selection:
    loss_mask: Tensor  # (n, C) tokens in the loss (EOS included; truncated rows zeroed when masked)
    selected: Tensor  # (n,) bool: guided rows chosen by distill_on (they count in N)
    distilled: Tensor  # (n,) bool: selected rows whose problem has w_i > 0 (the ones actually computed)
    row_weight: Tensor  # (n,) w of each row's problem


def select(
    gen: Generation,
    truncated: Tensor,
    plan: RolloutPlan,
    correct: Tensor,
    weights: Tensor,
    distill_on: str,
    mask_truncated: bool,
    distill: bool,
) -> Selection:
    """The loss mask of every row and the guided rows to distil on (docs/algorithm.md §4)."""
    loss_mask = gen.completion_mask.clone()
    if mask_truncated:
        loss_mask[truncated] = 0
    chosen = correct if distill_on == "correct" else torch.ones_like(correct)
    selected = plan.guided & chosen & (loss_mask.sum(1) > 0)
    row_weight = weights[plan.owner]
    distilled = selected & (row_weight > 0) if distill else torch.zeros_like(selected)
    return Selection(loss_mask, selected, distilled, row_weight)


# ---------------------------------------------------------------------------------------- 6. micro-batches


@dataclass
class MicroBatch:
    """One micro-step's rows. The student rows are the Na autonomous rows, then the Nd distilled ones,
    all with the autonomous prompt x; the teacher rows are the distilled ones with x ⊕ s.

    `loss` is the micro-batch's `LossInputs`, filled phase by phase: masks, advantages and weights at
    the split, the step's normalisers once reduced over processes, π_old / π_ref / the teacher by the
    no-grad passes; the student forward of the loss step adds the hidden states, ids and LM head."""

    student: Packed
    n_auto: int
    teacher: Packed | None  # Nd rows, or None when nothing is distilled
    loss: LossInputs
    distill_groups: Tensor | None = None  # (Nd,) long: the strategy source of each row's problem (metrics only)
    sampler_logps: Tensor | None = None  # (Na, C) log-probs of the sampled tokens under the sampling engine (vLLM)

    def to(self, device) -> MicroBatch:
        return replace(self, **{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    def group(self, rows: slice) -> MicroBatch:
        """The micro-batch's student rows `rows` (a range over its Na autonomous, then Nd distilled rows)
        with everything that belongs to them, trimmed of the padding columns the range does not use.
        The loss normalisers stay the whole step's (`sgpo.objectives.select_rows`)."""
        na, R = self.n_auto, self.student.num_rows
        start, stop = max(0, rows.start or 0), min(R, R if rows.stop is None else rows.stop)
        auto, distill = slice(min(start, na), min(stop, na)), slice(max(start, na) - na, max(stop, na) - na)
        part = self.student.rows(slice(start, stop))
        student = pack(part.prompt_ids, part.prompt_mask, part.completion_ids, part.completion_mask)
        C = student.completion_ids.shape[1]
        teacher = None
        if self.teacher is not None:
            t = self.teacher.rows(distill)
            t_ids, t_mask = trim(t.prompt_ids, t.prompt_mask, "left")
            teacher = Packed(
                t_ids, t_mask, student.completion_ids[auto.stop - auto.start :], student.completion_mask[auto.stop - auto.start :]
            )
        return MicroBatch(
            student=student,
            n_auto=auto.stop - auto.start,
            teacher=teacher,
            loss=select_rows(self.loss, auto, distill, C),
            distill_groups=None if self.distill_groups is None else self.distill_groups[distill],
            sampler_logps=None if self.sampler_logps is None else self.sampler_logps[auto, :C],
        )


def _to(value, device):
    """`value` on `device`: tensors and `Packed` rows moved, the tensors of a `LossInputs` too."""
    if isinstance(value, (Tensor, Packed)):
        return value.to(device)
    if isinstance(value, LossInputs):
        return replace(value, **{f.name: _to(getattr(value, f.name), device) for f in fields(value)})
    return value


def source_index(problems: Sequence[dict], sources: Sequence[str]) -> Tensor | None:
    """(B,) index of each problem's `strategy_source` in `sources` (-1: none); None without sources."""
    if not sources:
        return None
    lookup = {name: k for k, name in enumerate(sources)}
    return torch.tensor([lookup.get(str(p.get("strategy_source")), -1) for p in problems], dtype=torch.long)


def local_counts(plan: RolloutPlan, sel: Selection, num_micro: int) -> Tensor:
    """(S, 3) per micro-batch of this process: autonomous sequences, autonomous tokens, selected guided
    tokens. Summed over the micro-batches of an optimizer step and over processes they are the
    normalisers of that step (docs/algorithm.md §7)."""
    micro = plan.owner // (plan.num_problems // num_micro)  # (n,)
    tokens = sel.loss_mask.sum(1).float()
    auto = ~plan.guided
    out = torch.zeros(num_micro, 3)
    out[:, 0].index_add_(0, micro[auto], torch.ones(int(auto.sum())))
    out[:, 1].index_add_(0, micro[auto], tokens[auto])
    out[:, 2].index_add_(0, micro[sel.selected], tokens[sel.selected])
    return out


def set_step_normalisers(micro: Sequence[MicroBatch], step_counts: Tensor, max_completion_length: int, world: int) -> None:
    """Give each micro-batch its optimizer step's normalisers: `step_counts` (S / GA, 3) are
    `local_counts` summed over the GA micro-batches of each step and over the processes; `world` is
    GA × the number of processes (the count of micro-batches one step averages over)."""
    per_step = len(micro) // step_counts.shape[0]
    for k, mb in enumerate(micro):
        c = step_counts[k // per_step]
        mb.loss.auto_counts = GlobalCounts(float(c[0]), float(c[1]), max_completion_length, world)
        mb.loss.distill_tokens = float(c[2])


def consecutive_runs(prompt_ids: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """(distinct prompts, how many times each repeats) of a list in which copies are adjacent, as a
    plan's are: the form an engine that samples n completions per prompt (vLLM) takes."""
    unique: list[list[int]] = []
    counts: list[int] = []
    for p in prompt_ids:
        if unique and list(p) == unique[-1]:
            counts[-1] += 1
        else:
            unique.append(list(p))
            counts.append(1)
    return unique, counts


def split_micro_batches(
    gen: Generation,
    plan: RolloutPlan,
    sel: Selection,
    advantages: Tensor,
    num_micro: int,
    with_teacher: bool,
    problem_groups: Tensor | None = None,
    off_policy: Tensor | None = None,
) -> list[MicroBatch]:
    """Split the rows into `num_micro` micro-batches of B / S whole problems each.

    advantages: (n,) per row (0 on guided rows). The student rows take the problem's autonomous
    prompt x whatever they were sampled with; the teacher rows keep their guided prompt x ⊕ s.
    problem_groups: (B,) long, a label per problem carried to its distilled rows (for metrics).
    off_policy: (n,) bool, rows that are strong responses rather than rollouts (LUFFY).
    """
    micro = plan.owner // (plan.num_problems // num_micro)
    p_ids, p_mask = plan.problem_prompts
    out = []
    for k in range(num_micro):
        auto_rows = ((micro == k) & ~plan.guided).nonzero().squeeze(1)
        d_rows = ((micro == k) & sel.distilled).nonzero().squeeze(1)
        rows = torch.cat([auto_rows, d_rows])
        owners = plan.owner[rows]
        student = pack(p_ids[owners], p_mask[owners], gen.completion_ids[rows], gen.completion_mask[rows])
        C = student.completion_ids.shape[1]
        loss_mask = sel.loss_mask[rows, :C]
        na = len(auto_rows)
        teacher = None
        if with_teacher and len(d_rows):
            t_ids, t_mask = trim(gen.prompt_ids[d_rows], gen.prompt_mask[d_rows], "left")
            teacher = Packed(t_ids, t_mask, student.completion_ids[na:], student.completion_mask[na:])
        out.append(
            MicroBatch(
                student=student,
                n_auto=na,
                teacher=teacher,
                loss=LossInputs(
                    head_weight=None,
                    head_bias=None,
                    auto_hidden=None,
                    auto_ids=None,  # the loss step's forward
                    auto_mask=loss_mask[:na],
                    advantages=advantages[auto_rows],
                    auto_counts=None,  # set once the step's counts are reduced over processes
                    distill_mask=loss_mask[na:],
                    distill_weights=sel.row_weight[d_rows],
                    auto_off_policy=None if off_policy is None else off_policy[auto_rows],
                ),
                sampler_logps=None if gen.sampler_logps is None else gen.sampler_logps[auto_rows, :C],
                distill_groups=None if problem_groups is None else problem_groups[plan.owner[d_rows]],
            )
        )
    return out


# ---------------------------------------------------------------------------------------- 7. no-grad passes


def sampler_weights(mb: MicroBatch, mode: str, clip_max: float | None, clip_min: float | None) -> SamplerCorrectionStats:
    """Sets `mb.loss.is_weights`: the truncated importance weights π_old / π_sampler of the autonomous
    tokens (`vllm_importance_sampling_mode`, TRL's modes; `mb.loss.old_logps` scored by the trainer,
    `mb.sampler_logps` by the engine); returns their figures."""
    x = mb.loss
    ratio = sampler_correction(x.old_logps, mb.sampler_logps, x.auto_mask, mode, clip_max, clip_min)
    x.is_weights = ratio.expand_as(x.auto_mask).contiguous()
    return sampler_correction_stats(ratio, x.old_logps, mb.sampler_logps, x.auto_mask)


def completion_hidden(model, rows: Packed) -> Tensor:
    """Final hidden states that predict each completion token: (R, C, H).

    Position ids count real tokens only, so left padding does not shift them. The model's own LM
    head is applied to one position only: `sgpo.objectives` applies it to the tokens it scores."""
    input_ids = torch.cat([rows.prompt_ids, rows.completion_ids], dim=1)
    attention = torch.cat([rows.prompt_mask, rows.completion_mask], dim=1)
    position_ids = (attention.cumsum(1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
        output_hidden_states=True, logits_to_keep=1, use_cache=False,
    )  # fmt: skip
    P, C = rows.prompt_ids.shape[1], rows.completion_ids.shape[1]
    return out.hidden_states[-1][:, P - 1 : P - 1 + C]


@torch.no_grad()
def no_grad_hidden(model, rows: Packed, micro_batch_size: int | None = None) -> Tensor:
    """`completion_hidden` without gradient, `micro_batch_size` rows per forward. -> (R, C, H)"""
    R = rows.num_rows
    step = micro_batch_size or max(R, 1)
    parts = [completion_hidden(model, rows.rows(slice(s, s + step))) for s in range(0, R, step)]
    return torch.cat(parts, dim=0)


@torch.no_grad()
def score_logps(model, rows: Packed, mask: Tensor, *, head: str, temperature: float, lm_head: Callable,
                chunk_size: int | None = None, micro_batch_size: int | None = None) -> Tensor:  # fmt: skip
    """No-grad log-probs of the completion tokens under `mask` (R, C), 0 elsewhere: the hidden states
    (`no_grad_hidden`, `micro_batch_size` rows per forward), then `sampled_logps` of `head_functions`'
    `head` ("plain" | "chunked", with `chunk_size`) on the whole LM head, entered by `lm_head()` (a
    context) after the forward and on every process alike (`sgpo.sharding`). -> (R, C)"""
    h = no_grad_hidden(model, rows, micro_batch_size)
    sel = mask.bool()
    out = torch.zeros(sel.shape, dtype=torch.float32, device=h.device)
    with lm_head() as (weight, bias):
        if sel.any():
            sampled_logps, _ = head_functions(head)
            extra = {"chunk_size": chunk_size} if head == "chunked" else {}
            out[sel] = sampled_logps(h[sel], weight, rows.completion_ids[sel], temperature, bias, **extra).float()
    return out


# ---------------------------------------------------------------------------------------- 8. the loss step, in groups


def backward_groups(rows: Packed, group_size: int | None = None, group_tokens: int | None = None) -> list[slice]:
    """Consecutive ranges of a micro-batch's student rows, each to go through forward + backward on its
    own (`backward_group_size`, `backward_group_tokens`): at most `group_size` rows, and at most
    `group_tokens` padded tokens (rows × the longest prompt + the longest completion among them), but
    never fewer than one row. One range of every row when both are None.

    The loss is a sum over sequences with the whole step's normalisers, so the groups' gradients add
    up to the micro-batch's: the update does not change, only the activations held at once do."""
    R = rows.num_rows
    if group_size is None and group_tokens is None:
        return [slice(0, R)]
    prompt_len = rows.prompt_mask.sum(1).tolist()
    completion_len = rows.completion_mask.sum(1).tolist()
    groups: list[slice] = []
    start, p_max, c_max = 0, 0, 0
    for r in range(R):
        p, c = max(p_max, prompt_len[r]), max(c_max, completion_len[r])
        full = group_size is not None and r - start >= group_size
        over = group_tokens is not None and (r - start + 1) * (p + c) > group_tokens
        if r > start and (full or over):
            groups.append(slice(start, r))
            start, p, c = r, prompt_len[r], completion_len[r]
        p_max, c_max = p, c
    groups.append(slice(start, R))
    return groups
