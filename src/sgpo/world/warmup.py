"""Supervised warm-up: puts a fresh model in the regime SGPO is for.

The warm-up teaches *strategy following* on every family (guided examples: the prompt carries the
record's strategy) but shows *unguided* examples of each family only in a graded share of its records
(`auto_exposure`: from half of them down to none). After it, the model solves held-out problems of
every family when it is given the strategy, and on its own finds the procedure of a family more or
less often by how much of it it saw unguided: guided accuracy above autonomous accuracy, and
autonomous pass rates spread between 0 and 1, where reinforcement learning has something to climb.

A guided example also teaches, as a side effect, which procedure a question asks for (the question and
the strategy always agree), and a model that learned that could solve every family on its own. So a
share of the guided examples (`swap_fraction`) are *swapped*: the problem keeps its list and question,
but the strategy and the worked solution are those of another family (computed by the oracle on the
same list; the strategy extracted from that solution by `WorldExtractor`). Following the strategy is
then the only way to predict the solution, and the question alone does not tell the procedure in
guided training. Records on disk are never swapped: this is training data of the warm-up only.

Guided examples are drawn by *strategy* family, uniformly, so every strategy is practised equally
often: a family with a parameter (`count_target`, whose strategy needs the target named in the
question) cannot be swapped in and is always drawn matched.

A plain loop rather than TRL's `SFTTrainer`: the batches mix two prompt kinds per step under a fixed
ratio, the loss is on completion tokens only, guided and autonomous examples go through separate
forward passes (they differ ~2x in length, so padding them together would waste half the compute on
2 CPU cores), and the run must be bit-for-bit repeatable and resumable at any checkpoint — the batch
of step `t` is a pure function of `(seed, t)`, which a loop of ~60 lines gives directly.

Checkpoints (`state.pt`: model, optimizer, scheduler, step) are written atomically every
`save_every` steps; a rerun with the same config resumes from the last one and ends with the same
weights as an uninterrupted run.

Data-parallel: `warmup(..., rank=r, world_size=n)` in each of n processes of a `torch.distributed`
group computes the gradient of its share of every batch (every n-th example from the r-th), the
shares are summed across the processes, and each takes the same optimizer step. The loss is the same
function of the same batches; only the order of the floating-point sums differs from one process.
On 2 cores, 2 single-threaded processes beat one process with 2 threads, and do not stall when
another job takes a core (a 2-thread process then waits at every operator for its second thread).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from sgpo.prompts import PromptFormat, tokenize_prompts
from sgpo.sft import Example, completion_nll
from sgpo.strategies.base import render_strategy
from sgpo.world.extractor import WorldExtractor
from sgpo.world.families import Family, Instance, oracle_response, parse_numbers, wording_index, world_of
from sgpo.world.prompt import WORLD_PROMPT_FORMAT

#: the default world's (v2) autonomous exposure per family: from half of the records down to none
DEFAULT_AUTO_EXPOSURE = {"sum": 0.5, "sum_even": 0.25, "sum_odd": 0.12, "sum_big": 0.06, "sum_small": 0.03}


@dataclass(frozen=True)
class WarmupConfig:
    steps: int = 900
    batch_size: int = 24  # examples per step, guided + autonomous
    guided_fraction: float = 0.75  # share of guided examples in a batch
    swap_fraction: float = 0.8  # share of a strategy's guided examples posed on another family's question
    # per family, the share of its warm-up records also shown as autonomous examples (without the
    # strategy); a family not named gets none. Graded, so that the families differ in how often the
    # model finds their procedure on its own (docs/strategy-world.md, "Warm-up")
    auto_exposure: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_AUTO_EXPOSURE))
    # the steps before this one are guided only: the strategies are learnt first, and the autonomous
    # examples come in only for the last steps, so that a family's question is mapped to its procedure
    # partly, by its exposure, rather than completely whatever the exposure (docs/strategy-world.md)
    auto_from_step: int = 0
    # autonomous examples only from records whose list has at most this many numbers (None: any): a
    # warm-up whose problems span longer lists than the RL and test problems (`WorldSpec.warmup_length`)
    # demonstrates the longer ones with a strategy only, and maps questions to procedures on the usual lengths
    auto_max_numbers: int | None = None
    # instead of `auto_exposure` (which must then be empty): per question wording, by its place in a
    # family's `questions`, the share of every family's warm-up records asked in that wording that are
    # shown without strategy. The same for every family, so no family's procedure becomes the model's
    # default for a question it cannot read, and the pass rates still spread, by wording (world v2.5,
    # docs/results.md: graded exposure per family made `sum` the default, and SFT unlearning that
    # default failed gate criterion C7)
    wording_exposure: tuple[float, ...] | None = None
    learning_rate: float = 2e-3
    warmup_steps: int = 60
    min_lr_ratio: float = 0.1  # cosine decay to this fraction of the learning rate
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    save_every: int = 200
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["auto_exposure"] = dict(self.auto_exposure)
        if self.wording_exposure is not None:
            d["wording_exposure"] = list(self.wording_exposure)
        # unset fields are left out, as before they existed: older warm-up checkpoints resume
        return {k: v for k, v in d.items() if not (k in ("auto_max_numbers", "wording_exposure") and v is None)}


@dataclass
class WarmupData:
    """Tokenized examples, by the family of the strategy they follow: `guided[f]` (the records of
    family f), `swapped[f]` (records of other families given f's strategy and solution), and `auto`
    (each family's exposed share of its records, without strategy)."""

    guided: dict[str, list[Example]] = field(default_factory=dict)
    swapped: dict[str, list[Example]] = field(default_factory=dict)
    auto: list[Example] = field(default_factory=list)


def swapped_record(record: Mapping[str, Any], families: Sequence[Family] | None = None) -> dict[str, Any]:
    """`record` with the strategy and worked solution of another family of its world (`families`, or
    `world_of` the record's family; one without a target, since the question names none), on the same
    list; the family (and the solution's step notations) are drawn from a stream seeded by the id."""
    rng = random.Random(f"sgpo-swap:{record['id']}")
    world = world_of(record["family"], families)
    other = rng.choice([f for f in world if f.name != record["family"] and not f.has_target])
    response, _ = oracle_response(other, Instance(tuple(parse_numbers(record["problem"]))), rng)
    strategy = WorldExtractor().extract(record["problem"], response)
    return {**record, "family": other.name, "response": response, "strategy": render_strategy(strategy)}


def exposed_records(
    records: Sequence[Mapping[str, Any]],
    auto_exposure: Mapping[str, float],
    max_numbers: int | None = None,
    wording_exposure: Sequence[float] | None = None,
    families: Sequence[Family] | None = None,
) -> list[Mapping[str, Any]]:
    """The records shown without strategy: of each family f, its first round(auto_exposure[f] × n_f)
    records (in the order of `records`), families interleaved as in `records`; with `max_numbers`,
    of the records whose list has at most that many numbers (n_f counts those). With
    `wording_exposure` (and an empty `auto_exposure`) the quotas are per family and wording instead:
    round(wording_exposure[i] × n_f,i) of the records of family f asked in its i-th wording
    (`wording_index`; `families` the records' world, None: `world_of` each record's family)."""
    if max_numbers is not None:
        records = [r for r in records if len(parse_numbers(r["problem"])) <= max_numbers]
    known = {r["family"] for r in records}
    unknown = [f for f in auto_exposure if f not in known]
    if unknown:
        raise ValueError(f"auto_exposure names {unknown}, not families of the warm-up records ({sorted(known)})")
    bad = {f: e for f, e in auto_exposure.items() if not 0.0 <= e <= 1.0}
    if bad:
        raise ValueError(f"auto_exposure must be shares in [0, 1], got {bad}")
    if wording_exposure is None:
        key = lambda r: r["family"]  # noqa: E731
        share = dict(auto_exposure)
    else:
        if auto_exposure:
            raise ValueError("set one of auto_exposure and wording_exposure (auto_exposure: {} with wording_exposure)")
        if not all(0.0 <= e <= 1.0 for e in wording_exposure):
            raise ValueError(f"wording_exposure must be shares in [0, 1], got {list(wording_exposure)}")
        by_name = {f.name: f for name in known for f in world_of(name, families)}
        keys = {id(r): (r["family"], wording_index(by_name[r["family"]], r["problem"])) for r in records}
        more = sorted({k for k in keys.values() if k[1] >= len(wording_exposure)})
        if more:
            raise ValueError(
                f"wording_exposure has {len(wording_exposure)} shares, but family {more[0][0]!r} has a wording {more[0][1]}"
            )
        key = lambda r: keys[id(r)]  # noqa: E731
        share = {k: wording_exposure[k[1]] for k in keys.values()}
    total: dict[Any, int] = {}
    for r in records:
        total[key(r)] = total.get(key(r), 0) + 1
    quota = {k: round(e * total.get(k, 0)) for k, e in share.items()}
    taken: dict[Any, int] = {}
    out = []
    for r in records:
        k = key(r)
        if taken.get(k, 0) < quota.get(k, 0):
            taken[k] = taken.get(k, 0) + 1
            out.append(r)
    return out


def build_examples(
    records: Sequence[Mapping[str, Any]],
    tokenizer,
    auto_exposure: Mapping[str, float],
    prompt_format: PromptFormat = WORLD_PROMPT_FORMAT,
    swap_fraction: float = 0.0,
    families: Sequence[Family] | None = None,
    auto_max_numbers: int | None = None,
    wording_exposure: Sequence[float] | None = None,
) -> WarmupData:
    """The warm-up's examples of `records` (`WarmupData`); `families` is their world's families (the
    swapped solutions are drawn from it; None: `world_of` each record's family); `auto_max_numbers`
    and `wording_exposure`: `exposed_records`'s `max_numbers` and `wording_exposure`."""
    missing = [r["id"] for r in records if not r.get("strategy")]
    if missing:
        raise ValueError(f"warm-up records need a strategy; {len(missing)} have none, e.g. id {missing[0]!r}")
    eos = tokenizer.eos_token_id

    def guided_examples(rows: Sequence[Mapping[str, Any]]) -> list[Example]:
        responses = tokenizer([r["response"] for r in rows], add_special_tokens=False)["input_ids"]
        prompts = tokenize_prompts(
            tokenizer, [prompt_format.render(tokenizer, r["problem"], r["strategy"]) for r in rows], max_length=None
        )
        return [Example(p, list(c) + [eos]) for p, c in zip(prompts, responses)]

    def by_family(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Example]]:
        out: dict[str, list[Example]] = {}
        for r, e in zip(rows, guided_examples(rows)):
            out.setdefault(r["family"], []).append(e)
        return out

    data = WarmupData(guided=by_family(records))
    if swap_fraction > 0:
        data.swapped = by_family([swapped_record(r, families) for r in records])
    auto_rows = exposed_records(records, auto_exposure, auto_max_numbers, wording_exposure, families)
    if not auto_rows:  # no family exposed: a guided-only warm-up
        return data
    auto_prompts = tokenize_prompts(
        tokenizer, [prompt_format.render(tokenizer, r["problem"]) for r in auto_rows], max_length=None
    )
    responses = tokenizer([r["response"] for r in auto_rows], add_special_tokens=False)["input_ids"]
    data.auto = [Example(p, list(c) + [eos]) for p, c in zip(auto_prompts, responses)]
    return data


def step_batch(data: WarmupData, cfg: WarmupConfig, step: int) -> tuple[list[Example], list[Example]]:
    """(guided, auto) examples of step `step`: a pure function of (seed, step)."""
    rng = random.Random(f"sgpo-warmup:{cfg.seed}:{step}")
    mixed = data.auto and step >= cfg.auto_from_step
    n_guided = round(cfg.batch_size * cfg.guided_fraction) if mixed else cfg.batch_size
    families = sorted(data.guided)
    guided = []
    for _ in range(n_guided):
        fam = families[rng.randrange(len(families))]
        swapped = data.swapped.get(fam)
        pool = swapped if swapped and rng.random() < cfg.swap_fraction else data.guided[fam]
        guided.append(pool[rng.randrange(len(pool))])
    auto = [data.auto[rng.randrange(len(data.auto))] for _ in range(cfg.batch_size - n_guided)] if mixed else []
    return guided, auto


def lr_lambda(cfg: WarmupConfig) -> Callable[[int], float]:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio` at `steps`."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _sum_across_processes(model, loss: torch.Tensor | None) -> float:
    """Replace every gradient by its sum over the process group, in one all-reduce (with the loss,
    which is returned summed: the loss of the whole batch). A parameter without a gradient here (a
    share without examples) contributes zeros."""
    params = list(model.parameters())
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        + [loss.detach().reshape(1) if loss is not None else torch.zeros(1)]
    )
    dist.all_reduce(flat)  # 2 processes: a + b in both, the same bits everywhere
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return float(flat[-1])


def _save_state(path: Path, model, opt, sched, step: int, cfg: WarmupConfig, losses: list[float]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "config": cfg.to_dict(),
            "losses": losses,
        },
        tmp,
    )
    os.replace(tmp, path)


def warmup(
    model,
    tokenizer,
    records: Sequence[Mapping[str, Any]],
    cfg: WarmupConfig = WarmupConfig(),
    *,
    prompt_format: PromptFormat = WORLD_PROMPT_FORMAT,
    state_dir: str | Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    families: Sequence[Family] | None = None,
) -> list[float]:
    """Train `model` in place; returns the loss of every step (resumed steps included).

    With `state_dir`, a checkpoint is kept there (see the module doc) and a previous one is resumed
    when its config equals `cfg`; a checkpoint of another config is refused, never mixed in. With
    `world_size` > 1 this is one process of a data-parallel warm-up (module doc; the process group
    must be initialised); only rank 0 writes checkpoints. `families`: the records' world (`build_examples`).
    """
    data = build_examples(records, tokenizer, cfg.auto_exposure, prompt_format, cfg.swap_fraction, families, cfg.auto_max_numbers,
                          cfg.wording_exposure)  # fmt: skip
    torch.manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(0.9, 0.98),
        fused=all(p.device.type == "cpu" for p in model.parameters()) or None,  # one kernel, not 4 per tensor
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    start, losses = 0, []
    state_path = None
    if state_dir is not None:
        state_path = Path(state_dir) / "state.pt"
        state_path.parent.mkdir(parents=True, exist_ok=True)
        if state_path.exists():
            state = torch.load(state_path, weights_only=False)
            if state["config"] != cfg.to_dict():
                raise ValueError(
                    f"{state_path}: a warm-up checkpoint of another config is there ({json.dumps(state['config'])}); "
                    "remove it or use another output folder"
                )
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start, losses = state["step"], list(state["losses"])
    model.train()
    pad_id = tokenizer.pad_token_id
    for step in range(start, cfg.steps):
        guided, auto = step_batch(data, cfg, step)
        count = sum(len(e.completion) for e in guided + auto)  # completion tokens of the whole batch
        opt.zero_grad(set_to_none=True)
        parts = [completion_nll(model, part[rank::world_size], pad_id)[0] for part in (guided, auto) if part[rank::world_size]]
        loss = sum(parts) / count if parts else None
        if loss is not None:
            loss.backward()
        total = float(loss.detach()) if world_size == 1 else _sum_across_processes(model, loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(total)
        if on_step is not None:
            on_step(step + 1, total)
        if rank == 0 and state_path is not None and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            _save_state(state_path, model, opt, sched, step + 1, cfg, losses)
    model.eval()
    return losses
