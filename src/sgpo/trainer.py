"""`SGPOTrainer`: GRPO-style RL on autonomous rollouts plus strategy distillation on guided ones.

Orchestration only: every formula lives in `sgpo.objectives`. One generation batch, per process:

1. sample `num_generations` autonomous completions y ~ π_old(·|x) and `num_guided_generations`
   guided completions ỹ ~ π_old(·|x ⊕ s) per problem, in one padded `generate` call;
2. score them with the reward functions; acc_auto / acc_guided per problem;
3. group-relative advantages on the autonomous group;
4. instance weights w_i; pick the guided completions to distil on (`distill_on`);
5. no-grad passes, batched: π_old(y_t) of the autonomous tokens and π_old(ỹ_t | x) of the distilled
   tokens when the batch is reused over several optimizer steps, the reference model when beta > 0,
   and the teacher's final hidden states on (x ⊕ s, ỹ) — the teacher is the same policy *at rollout
   time*, so its distribution is fixed for the whole batch (the LM-head weight is snapshotted too when
   the batch outlives one optimizer step);
6. split into `steps_per_generation` micro-batches, with loss normalisers counted over each whole
   optimizer step and all processes (so the loss does not depend on how the batch is split).

Each micro-step then runs one student forward (autonomous and distilled rows together, *without*
the strategy) and adds L_RL + λ · Σ w_i m_t D_t / N (DESIGN §1.7).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import AutoModelForCausalLM, PreTrainedModel, Trainer, TrainerCallback

from sgpo.config import SGPOConfig
from sgpo.modeling import load_tokenizer
from sgpo.data import ColumnMap, DataError, count_missing_strategies, load_problems
from sgpo.objectives import (
    LOSS_TYPE_TO_AGG_MODE,
    GlobalCounts,
    InstanceWeightEMA,
    aggregate,
    cap_per_token,
    clipped_surrogate,
    clipped_surrogate_grad,
    group_relative_advantages,
    instance_weights,
    k3_kl,
    k3_kl_grad,
    proximal_keep_mask,
    token_weights,
)
from sgpo import kernels
from sgpo.objectives import lm_head as plain_head
from sgpo.prompts import PromptFormat, tokenize_prompts
from sgpo.rewards import RewardFunc, resolve_reward_func, reward_func_name
from sgpo.rollout import Generation, eos_ids, generate_completions, pad

logger = logging.getLogger(__name__)

# internal dataset columns (never passed to reward functions)
_PROMPT_IDS, _GUIDED_IDS, _PROMPT_TEXT, _GUIDED_TEXT = "_prompt_ids", "_guided_ids", "_prompt_text", "_guided_text"
_INTERNAL = (_PROMPT_IDS, _GUIDED_IDS, _PROMPT_TEXT, _GUIDED_TEXT)
STATE_FILE = "sgpo_state.json"


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned the wrong number of values, or a NaN / None."""


# ---------------------------------------------------------------------------------------- sampling


class RepeatBatchSampler(Sampler[int]):
    """Yields each generation batch of `batch_size` problem indices `repeat` times in a row.

    The data loader's batches are one process's share of a generation batch; repeating it lets the
    Trainer's loop call `training_step` once per micro-step while the trainer serves micro-batches
    from the buffer it generated on the first repeat (TRL's approach). Incomplete final batches are
    dropped. `set_epoch` reshuffles deterministically (seed + epoch), so a resumed run sees the same order.
    """

    def __init__(self, num_items: int, batch_size: int, repeat: int, shuffle: bool = True, seed: int = 0):
        self.num_items, self.batch_size, self.repeat = num_items, batch_size, repeat
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        for start in range(0, self.num_items - self.batch_size + 1, self.batch_size):
            chunk = order[start : start + self.batch_size]
            for _ in range(self.repeat):
                yield from chunk

    def __len__(self) -> int:
        return (self.num_items // self.batch_size) * self.batch_size * self.repeat


def _identity_collate(rows: list[dict]) -> list[dict]:
    return rows


# ---------------------------------------------------------------------------------------- metrics


class MetricsJSONLCallback(TrainerCallback):
    """Appends every log entry as one JSON line to `OUTPUT_DIR/metrics.jsonl` (main process only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": state.global_step, "epoch": state.epoch}
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str, bool)) or v is None})
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


class _StepSyncCallback(TrainerCallback):
    """Keeps the micro-step counter in line with a (possibly resumed) global step."""

    def __init__(self, trainer: "SGPOTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._step = state.global_step * args.gradient_accumulation_steps
        self.trainer._buffer = None
        self.trainer._last_log_time = time.perf_counter()


# ---------------------------------------------------------------------------------------- trainer


class SGPOTrainer(Trainer):
    """Strategy-Guided Policy Optimization on top of `transformers.Trainer`.

    Args:
        model: a causal LM, or a path / hub id loaded with `args.model_init_kwargs`.
        args: an `SGPOConfig`.
        processing_class: the tokenizer (loaded from the model path when None). Without a pad token,
            the EOS token is used for padding (as TRL does).
        reward_funcs: callables with TRL's signature `f(prompts, completions, **columns) -> list[float]`,
            registry names or `module:function` strings (`args.reward_funcs` when None).
        train_dataset: a `datasets.Dataset`, or a path to a JSONL / JSON / parquet file, with columns
            `problem`, `answer`, and optionally `strategy` and `id` (names set in `args`).
    """

    _tag_names = ["sgpo"]
    loss_is_scaled_for_ga = True  # compute_loss already divides by the global, per-step normalisers

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: SGPOConfig | None = None,
        processing_class=None,
        reward_funcs: Sequence[str | RewardFunc] | str | RewardFunc | None = None,
        train_dataset: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = SGPOConfig(output_dir=f"{str(name).split('/')[-1]}-SGPO")
        if not isinstance(args, SGPOConfig):
            raise TypeError(f"args must be an SGPOConfig, got {type(args).__name__}")
        if train_dataset is None:
            raise DataError("SGPOTrainer needs a train_dataset (a datasets.Dataset or a .jsonl/.json/.parquet path)")

        # -- model and tokenizer
        if isinstance(model, str):
            init_kwargs = dict(args.model_init_kwargs or {})
            if isinstance(init_kwargs.get("dtype"), str) and init_kwargs["dtype"] != "auto":
                init_kwargs["dtype"] = getattr(torch, init_kwargs["dtype"])
            model_path = model
            model = AutoModelForCausalLM.from_pretrained(model_path, **init_kwargs)
            if processing_class is None:
                processing_class = load_tokenizer(model_path)
        if processing_class is None:
            processing_class = load_tokenizer(model.config._name_or_path)
        tokenizer = processing_class
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "the tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token before training"
                )
            logger.warning("the tokenizer has no pad token; using its EOS token %r for padding", tokenizer.eos_token)
            tokenizer.pad_token = tokenizer.eos_token
        for attr in ("final_logit_softcapping", "logit_scale"):
            if getattr(model.config, attr, None) not in (None, 1.0):
                raise NotImplementedError(
                    f"models with config.{attr} are not supported yet: SGPO applies the LM head itself to score tokens"
                )
        if args.disable_dropout:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0

        # -- reward functions
        if reward_funcs is None:
            reward_funcs = list(args.reward_funcs)
        if isinstance(reward_funcs, (str,)) or callable(reward_funcs):
            reward_funcs = [reward_funcs]
        self.reward_funcs: list[RewardFunc] = [resolve_reward_func(f) for f in reward_funcs]
        if not self.reward_funcs:
            raise ValueError("at least one reward function is needed")
        self.reward_func_names = [reward_func_name(f) for f in self.reward_funcs]
        weights = args.reward_weights if args.reward_weights is not None else [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(weights)} values for {len(self.reward_funcs)} reward functions")
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)

        # -- data: validate everything and tokenize every prompt up front, so bad rows fail now, not at step 9,000
        self.prompt_format = PromptFormat(
            template=args.prompt_template,
            guided_template=args.guided_prompt_template,
            system_prompt=args.system_prompt,
            use_chat_template=args.use_chat_template,
        )
        columns = ColumnMap(args.problem_column, args.answer_column, args.strategy_column, args.id_column)
        source_name = train_dataset if isinstance(train_dataset, str) else "train_dataset"
        dataset = load_problems(train_dataset, columns=columns, require_strategy=args.require_strategy)
        dataset = self._tokenize_dataset(dataset, tokenizer, args, source_name)

        super().__init__(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.model_accepts_loss_kwargs = False
        self.add_callback(MetricsJSONLCallback(Path(args.output_dir) / "metrics.jsonl"))
        self.add_callback(_StepSyncCallback(self))

        self._eos = eos_ids(tokenizer, model)
        self._step = 0
        self._buffer: list[dict] | None = None
        self._ema = InstanceWeightEMA(args.instance_weight_ema)
        self._metric_keys: list[str] = self._all_metric_keys()
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, float] = defaultdict(float)
        self._last_log_time = time.perf_counter()
        self.ref_model = None
        if args.beta > 0:
            self.ref_model = AutoModelForCausalLM.from_config(model.config)
            self.ref_model.load_state_dict(model.state_dict())
            self.ref_model.requires_grad_(False).eval()
            self.ref_model = self.accelerator.prepare_model(self.ref_model, evaluation_mode=True)
        self._chunked = args.head_implementation == "chunked"

    # ------------------------------------------------------------------------------------ data

    def _tokenize_dataset(self, dataset, tokenizer, args: SGPOConfig, source_name: str):
        n_missing = count_missing_strategies(dataset)
        guided = args.num_guided_generations > 0
        if guided and n_missing:
            logger.warning(
                "%s: %d of %d problems have no usable strategy (missing, empty or not a string); "
                "they train with RL only",
                source_name,
                n_missing,
                len(dataset),
            )
        self.num_problems_without_strategy = n_missing
        ids = [str(i) for i in dataset["id"]]
        problems = dataset["problem"]
        strategies = dataset["strategy"]
        texts = [self.prompt_format.render(tokenizer, p) for p in problems]
        names = [f"{i} (id {pid!r})" for i, pid in enumerate(ids)]
        special = not self.prompt_format.applies_chat_template(tokenizer)
        prompt_ids = tokenize_prompts(
            tokenizer, texts, max_length=args.max_prompt_length, row_names=names, what="prompt", add_special_tokens=special
        )
        guided_texts = [""] * len(dataset)
        guided_ids: list[list[int]] = [[] for _ in range(len(dataset))]
        if guided:
            rows = [i for i, s in enumerate(strategies) if s is not None]
            g_texts = [self.prompt_format.render(tokenizer, problems[i], strategies[i]) for i in rows]
            g_ids = tokenize_prompts(
                tokenizer,
                g_texts,
                max_length=args.max_prompt_length,
                row_names=[names[i] for i in rows],
                what="guided prompt",
                add_special_tokens=special,
            )
            for i, t, g in zip(rows, g_texts, g_ids):
                guided_texts[i], guided_ids[i] = t, g
        dataset = dataset.add_column(_PROMPT_TEXT, texts).add_column(_PROMPT_IDS, prompt_ids)
        return dataset.add_column(_GUIDED_TEXT, guided_texts).add_column(_GUIDED_IDS, guided_ids)

    def get_train_dataloader(self) -> DataLoader:
        args = self.args
        per_process = args.per_device_train_batch_size * args.steps_per_generation
        global_batch = per_process * self.accelerator.num_processes
        if len(self.train_dataset) < global_batch:
            raise DataError(
                f"train_dataset has {len(self.train_dataset)} problems; one generation batch needs at least "
                f"{global_batch} (per_device_train_batch_size {args.per_device_train_batch_size} × "
                f"steps_per_generation {args.steps_per_generation} × {self.accelerator.num_processes} processes)"
            )
        sampler = RepeatBatchSampler(
            len(self.train_dataset),
            batch_size=global_batch,
            repeat=args.steps_per_generation * args.num_iterations,
            shuffle=args.shuffle_dataset,
            seed=args.seed,
        )
        loader = DataLoader(
            self.train_dataset,
            batch_size=per_process,
            sampler=sampler,
            collate_fn=_identity_collate,
            num_workers=0,
        )
        return self.accelerator.prepare(loader)

    # ------------------------------------------------------------------------------------ rollouts

    def _prepare_inputs(self, generation_batch: list[dict]) -> dict:
        args = self.args
        period = args.steps_per_generation * args.num_iterations
        if self._buffer is None or self._step % period == 0:
            self._buffer = self._generate_and_score(generation_batch)
        micro = self._buffer[self._step % args.steps_per_generation]
        self._step += 1
        return micro

    def _generate(self, prompt_ids: list[list[int]]) -> Generation:
        """Sample one completion per prompt (override to plug in another generation engine)."""
        args = self.args
        model = self.accelerator.unwrap_model(self.model)
        return generate_completions(
            model,
            self.processing_class,
            prompt_ids,
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            min_p=args.min_p,
            repetition_penalty=args.repetition_penalty,
            batch_size=args.generation_micro_batch_size,
            generation_kwargs=args.generation_kwargs,
        )

    def _compute_rewards(
        self, prompts: list[str], completions: list[str], rows: list[dict], guided: list[bool]
    ) -> torch.Tensor:
        """(n,) weighted sum of the reward functions; errors name the function and the row."""
        keys = [k for k in rows[0] if k not in _INTERNAL]
        columns = {k: [r[k] for r in rows] for k in keys}
        columns["guided"] = list(guided)

        def describe(j: int) -> str:
            kind = "guided" if guided[j] else "autonomous"
            return f"problem id {rows[j]['id']!r} ({kind} completion)"

        per_func = torch.zeros(len(completions), len(self.reward_funcs))
        for f_idx, (fn, name) in enumerate(zip(self.reward_funcs, self.reward_func_names)):
            t_call = time.perf_counter()
            try:
                values = fn(prompts=prompts, completions=completions, **columns)
            except Exception as exc:
                culprit = ""
                # find the first row that fails on its own — unless the call was slow to fail (a broken
                # service, not a bad row): then retrying row by row would only multiply the wait
                rows_to_try = range(len(completions)) if time.perf_counter() - t_call < 5.0 else range(0)
                for j in rows_to_try:
                    try:
                        fn(prompts=prompts[j : j + 1], completions=completions[j : j + 1], **{k: v[j : j + 1] for k, v in columns.items()})
                    except Exception:  # noqa: BLE001
                        culprit = f"; it fails on {describe(j)}"
                        break
                raise RewardFunctionError(f"reward function {name!r} raised {type(exc).__name__}: {exc}{culprit}") from exc
            values = list(values) if values is not None else []
            if len(values) != len(completions):
                raise RewardFunctionError(
                    f"reward function {name!r} returned {len(values)} values for {len(completions)} completions"
                )
            for j, v in enumerate(values):
                if v is None or not isinstance(v, (int, float)) or math.isnan(float(v)):
                    raise RewardFunctionError(f"reward function {name!r} returned {v!r} for {describe(j)}")
            per_func[:, f_idx] = torch.tensor([float(v) for v in values])
            self._add_metric(f"rewards/{name}", per_func[:, f_idx].sum().item(), len(values))
        return (per_func * self.reward_weights).sum(dim=1)

    def _sampled_logps(self, hidden, weight, targets, bias, loss_weights=None) -> torch.Tensor:
        """log π(targets) from hidden states (M, H) -> (M,), through the configured LM-head path.
        `loss_weights` (chunked path only) is the per-token gradient factor the loss will apply, which
        lets the kernel finish the LM head's gradient in the forward pass (it never changes a result)."""
        T = self.args.temperature
        if self._chunked:
            return kernels.sampled_logps(hidden, weight, targets, T, bias, chunk_size=self.args.head_chunk_size, loss_weights=loss_weights)
        return plain_head.sampled_logps(hidden, weight, targets, T, bias)

    def _distill_terms(self, s_hidden, t_hidden, weight, targets, teacher_weight, bias, loss_weights=None):
        args = self.args
        kw = dict(teacher_weight=teacher_weight, kind=args.distill_divergence, topk=args.distill_topk, temperature=args.temperature, bias=bias)
        if self._chunked:
            return kernels.distill_terms(s_hidden, t_hidden, weight, targets, chunk_size=args.head_chunk_size, loss_weights=loss_weights, **kw)
        return plain_head.distill_terms(s_hidden, t_hidden, weight, targets, **kw)

    def _lm_head(self, model) -> tuple[torch.Tensor, torch.Tensor | None]:
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        return head.weight, getattr(head, "bias", None)

    def _completion_hidden(
        self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> torch.Tensor:
        """Final hidden states that predict each completion token. (R,P),(R,P),(R,C),(R,C) -> (R,C,H)"""
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention = torch.cat([prompt_mask, completion_mask], dim=1)
        position_ids = (attention.cumsum(1) - 1).clamp(min=0)
        out = model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=position_ids,
            output_hidden_states=True,
            logits_to_keep=1,  # the LM head is applied by sgpo.objectives, to the scored tokens only
            use_cache=False,
        )
        P, C = prompt_ids.shape[1], completion_ids.shape[1]
        return out.hidden_states[-1][:, P - 1 : P - 1 + C]

    def _pack(self, prompts: Sequence[Sequence[int]], completions: Sequence[torch.Tensor], C: int | None = None) -> dict:
        """Left-pad prompts and right-pad completions (given as 1-D tensors of real tokens)."""
        pad_id = self.processing_class.pad_token_id
        p_ids, p_mask = pad(prompts, pad_id, "left")
        c_ids, c_mask = pad([c.tolist() for c in completions], pad_id, "right", length=C)
        device = self.accelerator.device
        return {"prompt_ids": p_ids.to(device), "prompt_mask": p_mask.to(device), "completion_ids": c_ids.to(device), "completion_mask": c_mask.to(device)}

    @torch.no_grad()
    def _score_hidden(self, model, batch: dict) -> torch.Tensor:
        """No-grad completion hidden states of a packed batch, in forward micro-batches. -> (R, C, H)"""
        R = batch["prompt_ids"].shape[0]
        step = self.args.forward_micro_batch_size or max(R, 1)
        chunks = [
            self._completion_hidden(model, *(batch[k][s : s + step] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")))
            for s in range(0, R, step)
        ]
        return torch.cat(chunks, dim=0)

    @torch.no_grad()
    def _score_logps(self, model, batch: dict, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """No-grad log-probs of the completion tokens. -> (R, C), 0 at padding"""
        h = self._score_hidden(model, batch)
        mask = batch["completion_mask"].bool()
        out = torch.zeros(mask.shape, dtype=torch.float32, device=h.device)
        if mask.any():
            out[mask] = self._sampled_logps(h[mask], weight, batch["completion_ids"][mask], bias).float()
        return out

    @torch.no_grad()
    def _generate_and_score(self, problems: list[dict]) -> list[dict]:
        args = self.args
        t0 = time.perf_counter()
        Ga, Gg = args.num_generations, args.num_guided_generations
        n_prob = len(problems)
        S, GA = args.steps_per_generation, args.gradient_accumulation_steps
        if n_prob % S:
            raise RuntimeError(f"generation batch of {n_prob} problems does not split into {S} micro-batches")
        B = n_prob // S

        # 1. sample autonomous and guided completions in one call
        gen_prompts, gen_texts, owner, guided = [], [], [], []
        for i, row in enumerate(problems):
            for _ in range(Ga):
                gen_prompts.append(row[_PROMPT_IDS]), gen_texts.append(row[_PROMPT_TEXT]), owner.append(i), guided.append(False)
            if Gg and row["strategy"] is not None:
                for _ in range(Gg):
                    gen_prompts.append(row[_GUIDED_IDS]), gen_texts.append(row[_GUIDED_TEXT]), owner.append(i), guided.append(True)
        with self._timed("time/generate_s"):
            gen = self._generate(gen_prompts)
        lengths = gen.completion_mask.sum(1)  # (n,)
        completions = [gen.completion_ids[j, : int(lengths[j])] for j in range(len(gen_prompts))]
        last = gen.completion_ids.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        has_eos = torch.isin(last, torch.tensor(self._eos or [-1])) & (lengths > 0)
        truncated = ~has_eos
        guided_t = torch.tensor(guided)
        owner_t = torch.tensor(owner)

        # 2. rewards, correctness, per-problem accuracies
        with self._timed("time/rewards_s"):
            rewards = self._compute_rewards(gen_texts, gen.texts, [problems[i] for i in owner], guided)
        correct = rewards >= args.correct_reward_threshold
        auto_idx = (~guided_t).nonzero().squeeze(1)  # problem-major, Ga per problem
        acc_auto = correct[auto_idx].view(n_prob, Ga).float().mean(1)  # (n_prob,)
        g_owner = owner_t[guided_t]  # the problem of each guided row
        n_guided = torch.bincount(g_owner, minlength=n_prob)  # (n_prob,)
        has_guided = n_guided > 0
        acc_guided = torch.zeros(n_prob).index_add_(0, g_owner, correct[guided_t].float()) / n_guided.clamp(min=1)
        guided_reward = torch.zeros(n_prob).index_add_(0, g_owner, rewards[guided_t].float()) / n_guided.clamp(min=1)

        # 3. advantages on the autonomous group (gathered: batch-scaled std is global, as TRL)
        auto_rewards = rewards[auto_idx]
        all_rewards = self.accelerator.gather(auto_rewards.to(self.accelerator.device)).cpu()
        advantages_all = group_relative_advantages(all_rewards, Ga, args.scale_rewards)
        rank = self.accelerator.process_index
        advantages = advantages_all[rank * len(auto_rewards) : (rank + 1) * len(auto_rewards)]

        # 4. instance weights and the guided completions to distil on
        distill = args.distill_coef > 0 and bool(has_guided.any())
        weights = torch.zeros(n_prob)
        if has_guided.any():
            raw = instance_weights(args.instance_weighting, acc_auto, acc_guided)
            ids = [str(problems[i]["id"]) for i in range(n_prob) if has_guided[i]]
            weights[has_guided] = self._ema(ids, raw[has_guided].float())
        loss_mask_rows = gen.completion_mask.clone()
        if args.mask_truncated_completions:
            loss_mask_rows[truncated] = 0
        selected = guided_t & (correct if args.distill_on == "correct" else torch.ones_like(correct))
        selected &= loss_mask_rows.sum(1) > 0

        # 5. micro-batches: rows per micro-batch, global normalisers per optimizer step
        head_w, head_b = self._lm_head(self.model)
        reuse = S > GA or args.num_iterations > 1
        teacher_weight = teacher_bias = None
        if distill and reuse:
            teacher_weight = head_w.detach().clone()
            teacher_bias = None if head_b is None else head_b.detach().clone()
        need_teacher = distill and args.distill_divergence != "imitation"
        micro: list[dict] = []
        a_pos = {j: q for q, j in enumerate(auto_idx.tolist())}  # row -> index into `advantages`
        local_counts = torch.zeros(S, 3)  # auto sequences, auto tokens, distilled tokens
        for k in range(S):
            probs = range(k * B, (k + 1) * B)
            a_rows = [int(j) for j in auto_idx if owner[int(j)] in probs]
            d_all = [j for j in range(len(owner)) if owner[j] in probs and bool(selected[j])]
            d_rows = [j for j in d_all if weights[owner[j]] > 0] if distill else []
            local_counts[k, 0] = len(a_rows)
            local_counts[k, 1] = loss_mask_rows[a_rows].sum()
            local_counts[k, 2] = loss_mask_rows[d_all].sum() if d_all else 0
            C = max([int(lengths[j]) for j in a_rows + d_rows] + [1])
            student = self._pack(
                [problems[owner[j]][_PROMPT_IDS] for j in a_rows + d_rows], [completions[j] for j in a_rows + d_rows], C
            )
            n_auto = len(a_rows)
            mb: dict[str, Any] = {"student": student, "n_auto": n_auto}
            dev = self.accelerator.device
            mb["auto_loss_mask"] = pad([[1] * int(loss_mask_rows[j].sum()) for j in a_rows], 0, "right", length=C)[0].to(dev)
            mb["advantages"] = advantages[[a_pos[j] for j in a_rows]].to(dev)
            auto_part = {key: val[:n_auto] for key, val in student.items()}
            if reuse:
                # one no-grad pass for the old log-probs of the autonomous rows and, when the proximal
                # mask needs them, of the distilled rows (both under the unguided prompt)
                both = bool(d_rows) and args.distill_proximal
                with self._timed("time/old_logps_s"):
                    old_logps = self._score_logps(self.model, student if both else auto_part, head_w, head_b)
                mb["old_logps"] = old_logps[:n_auto]
                if both:
                    mb["distill_old_logps"] = old_logps[n_auto:]
            if self.ref_model is not None:
                ref_w, ref_b = self._lm_head(self.ref_model)
                with self._timed("time/reference_s"):
                    mb["ref_logps"] = self._score_logps(self.ref_model, auto_part, ref_w, ref_b)
            if d_rows:
                mb["distill_weights"] = torch.tensor([float(weights[owner[j]]) for j in d_rows], device=dev)
                mb["distill_mask"] = pad([[1] * int(loss_mask_rows[j].sum()) for j in d_rows], 0, "right", length=C)[0].to(dev)
                if need_teacher:
                    teacher = self._pack([problems[owner[j]][_GUIDED_IDS] for j in d_rows], [completions[j] for j in d_rows], C)
                    with self._timed("time/teacher_s"):
                        mb["teacher_hidden"] = self._score_hidden(self.model, teacher)
                    mb["teacher_weight"], mb["teacher_bias"] = teacher_weight, teacher_bias
            micro.append(mb)

        step_counts = local_counts.view(S // GA, GA, 3).sum(1).to(self.accelerator.device)
        step_counts = self.accelerator.reduce(step_counts, reduction="sum").cpu()
        for k, mb in enumerate(micro):
            c = step_counts[k // GA]
            mb["counts"] = {"auto": GlobalCounts(float(c[0]), float(c[1]), args.max_completion_length), "distill_tokens": float(c[2])}

        # 6. metrics of this generation batch
        auto_len = lengths[auto_idx].float()
        self._add_metric("reward/auto", rewards[auto_idx].sum().item(), len(auto_idx))
        self._add_metric("accuracy/auto", acc_auto.sum().item(), n_prob)
        self._add_metric("completion_length/auto", auto_len.sum().item(), len(auto_idx))
        self._add_metric("completions/truncated_frac", truncated.float().sum().item(), len(truncated))
        self._add_metric("tokens/generated", float(lengths.sum()), 0)
        if has_guided.any():
            g = has_guided
            g_rows = guided_t.nonzero().squeeze(1)
            auto_reward_per_problem = rewards[auto_idx].view(n_prob, Ga).mean(1)
            self._add_metric("reward/guided", rewards[g_rows].sum().item(), len(g_rows))
            self._add_metric("reward/gap", (guided_reward[g] - auto_reward_per_problem[g]).sum().item(), int(g.sum()))
            self._add_metric("accuracy/guided", acc_guided[g].sum().item(), int(g.sum()))
            self._add_metric("completion_length/guided", lengths[g_rows].float().sum().item(), len(g_rows))
            self._add_metric("distill/weight_mean", weights[g].sum().item(), int(g.sum()))
            self._add_metric("distill/weighted_frac", (weights[g] > 0).float().sum().item(), int(g.sum()))
            self._add_metric("distill/selected_sequences", float(selected.sum()), 1)
        self._add_metric("problems/without_strategy_frac", float((~has_guided).sum()) if Gg else 0.0, n_prob)
        self._add_metric("time/generate_and_score_s", time.perf_counter() - t0, 1)
        return micro

    # ------------------------------------------------------------------------------------ loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        # generation happens in _prepare_inputs (inside super().training_step): time it separately
        t0 = time.perf_counter()
        gen_before = self._sums.get("time/generate_and_score_s", 0.0)
        loss = super().training_step(model, inputs, num_items_in_batch)
        gen_time = self._sums.get("time/generate_and_score_s", 0.0) - gen_before
        self._add_metric("time/train_step_s", time.perf_counter() - t0 - gen_time, 0)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise ValueError("SGPOTrainer does not return outputs")
        args = self.args
        mb = inputs
        student = mb["student"]
        n_auto = mb["n_auto"]
        hidden = self._completion_hidden(model, student["prompt_ids"], student["prompt_mask"], student["completion_ids"], student["completion_mask"])
        weight, bias = self._lm_head(model)
        scale = float(self.accelerator.num_processes)  # DDP averages gradients over processes
        targets = student["completion_ids"]

        # -- RL term on the autonomous rows
        a_mask = mb["auto_loss_mask"]
        sel = a_mask.bool()
        agg_mode = LOSS_TYPE_TO_AGG_MODE[args.loss_type]
        counts = mb["counts"]["auto"]
        old = mb.get("old_logps")
        ref = mb.get("ref_logps")
        logp = torch.zeros(a_mask.shape, dtype=torch.float32, device=hidden.device)
        if sel.any():
            adv_tok = mb["advantages"].unsqueeze(1).expand_as(a_mask)[sel]
            agg_tok = token_weights(a_mask.float(), agg_mode, counts)[sel]
            old_tok = None if old is None else old[sel]
            ref_tok = None if ref is None else ref[sel]

            def rl_grad(rows, lp):  # ∂L_RL/∂logp per token: lets the chunked head finish ∂W in forward
                g = clipped_surrogate_grad(lp, lp if old_tok is None else old_tok[rows], adv_tok[rows], args.epsilon, args.epsilon_high, args.delta)
                if ref_tok is not None:
                    g = g + args.beta * k3_kl_grad(lp, ref_tok[rows])
                return g * agg_tok[rows]

            tok_logp = self._sampled_logps(hidden[:n_auto][sel], weight, targets[:n_auto][sel], bias, rl_grad)
            logp = logp.masked_scatter(sel, tok_logp.float())
        old = logp.detach() if old is None else old
        pl = clipped_surrogate(logp, old, mb["advantages"], args.epsilon, args.epsilon_high, args.delta)
        per_token = pl.per_token_loss
        if ref is not None:
            kl_ref = k3_kl(logp, ref)
            per_token = per_token + args.beta * kl_ref
            self._add_metric("kl_ref", (kl_ref * a_mask).sum().item(), a_mask.sum().item())
        rl_loss = aggregate(per_token, a_mask, agg_mode, counts) * scale
        n_tok = a_mask.sum().item()
        self._add_metric("rl/loss", rl_loss.item() / scale, 0)
        self._add_metric("clip/low", (pl.low_clipped & sel).sum().item(), n_tok)
        self._add_metric("clip/high", (pl.high_clipped & sel).sum().item(), n_tok)
        self._add_metric("clip/region", ((pl.low_clipped | pl.high_clipped) & sel).sum().item(), n_tok)
        loss = rl_loss

        # -- distillation term on the selected guided rows (student context: no strategy)
        if "distill_mask" in mb:
            d_mask = mb["distill_mask"].bool()
            s_h = hidden[n_auto:][d_mask]  # (Nd, H)
            d_targets = targets[n_auto:][d_mask]
            w_tok = mb["distill_weights"].unsqueeze(1).expand_as(d_mask)[d_mask]
            old_d = mb.get("distill_old_logps")
            old_tok = None if old_d is None else old_d[d_mask]
            el, eh, cap = args.distill_epsilon_low, args.distill_epsilon_high, args.distill_kl_cap

            def keep_mask(s_logp, t_logp, rows=slice(None)):
                if not args.distill_proximal:
                    return torch.ones_like(s_logp)
                old_r = s_logp.detach() if old_tok is None else old_tok[rows]
                return proximal_keep_mask(s_logp, old_r, t_logp, el, eh)

            if args.distill_divergence == "imitation":
                # NLL of the guided tokens (trajectory imitation, ablation); "the teacher" wants every token up
                def nll_grad(rows, lp):
                    return -w_tok[rows] * keep_mask(lp, torch.zeros_like(lp), rows)

                s_logp = self._sampled_logps(s_h, weight, d_targets, bias, nll_grad).float()
                div, t_logp = -s_logp, torch.zeros_like(s_logp)
            else:
                def distill_grad(rows, terms):  # ∂(Σ w·keep·min(D, cap))/∂D per token
                    g = w_tok[rows] * keep_mask(terms.student_logp, terms.teacher_logp, rows)
                    return g if cap is None else g * (terms.divergence <= cap)

                terms = self._distill_terms(
                    s_h, mb["teacher_hidden"][d_mask], weight, d_targets, mb.get("teacher_weight"), bias, distill_grad
                )
                div, s_logp, t_logp = terms.divergence.float(), terms.student_logp.float(), terms.teacher_logp.float()
            keep = keep_mask(s_logp, t_logp)
            n_global = max(mb["counts"]["distill_tokens"], 1.0)
            distill_loss = args.distill_coef * (w_tok * keep * cap_per_token(div, cap)).sum() / n_global * scale
            loss = loss + distill_loss
            n_d = float(d_mask.sum())
            self._add_metric("distill/loss", distill_loss.item() / scale, 0)
            self._add_metric("distill/kl", div.detach().sum().item(), n_d)
            self._add_metric("distill/masked_frac", (1 - keep).sum().item(), n_d)
            self._add_metric("distill/tokens", n_d, 0)
        return loss

    # ------------------------------------------------------------------------------------ logging

    def _all_metric_keys(self) -> list[str]:
        keys = [
            "reward/auto", "reward/guided", "reward/gap", "accuracy/auto", "accuracy/guided",
            "completion_length/auto", "completion_length/guided", "completions/truncated_frac",
            "distill/weight_mean", "distill/weighted_frac", "distill/selected_sequences", "distill/kl",
            "distill/masked_frac", "distill/loss", "distill/tokens", "rl/loss", "clip/low", "clip/high",
            "clip/region", "kl_ref", "problems/without_strategy_frac", "tokens/generated",
        ]
        keys += [f"time/{k}_s" for k in ("generate_and_score", "generate", "rewards", "old_logps", "reference", "teacher", "train_step")]
        return keys + [f"rewards/{n}" for n in self.reward_func_names]

    @contextmanager
    def _timed(self, key: str):
        """Adds the wall time of the block to metric `key` (seconds per logging window)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._add_metric(key, time.perf_counter() - t0, 0)

    def _add_metric(self, key: str, total: float, count: float) -> None:
        """Accumulate a metric as (sum, count); count 0 means "a sum to report as is" (per logging window)."""
        self._sums[key] += float(total)
        self._counts[key] += float(count)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs or "train_loss" not in logs:
            keys = self._metric_keys
            vals = torch.tensor(
                [[self._sums.get(k, 0.0), self._counts.get(k, 0.0), 1.0 if k in self._sums else 0.0] for k in keys],
                dtype=torch.float64,
                device=self.accelerator.device,
            )
            vals = self.accelerator.reduce(vals, reduction="sum").cpu()
            steps = max(self.state.global_step - getattr(self, "_last_logged_step", 0), 1)
            now = time.perf_counter()
            for k, (total, count, present) in zip(keys, vals.tolist()):
                if not present:
                    continue
                if k == "tokens/generated":
                    logs["tokens_per_second"] = total / max(now - self._last_log_time, 1e-9)
                elif k in ("rl/loss", "distill/loss"):
                    logs[k] = total / steps  # per optimizer step, like "loss"
                elif k in ("distill/tokens", "distill/selected_sequences") or k.startswith("time/"):
                    logs[k] = total
                elif count > 0:
                    logs[k] = total / count
            self._last_log_time = now
            self._last_logged_step = self.state.global_step
            self._sums.clear()
            self._counts.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------ state

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        # evaluation and selectivity prompt the model the way it was trained
        self.prompt_format.save(output_dir or self.args.output_dir)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            if folder.is_dir():
                (folder / STATE_FILE).write_text(json.dumps({"instance_weight_ema": self._ema.state_dict()}))

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        if resume_from_checkpoint:
            from transformers.trainer_utils import get_last_checkpoint

            path = resume_from_checkpoint
            if path is True:
                path = get_last_checkpoint(self.args.output_dir)
                if path is None:
                    raise ValueError(f"resume_from_checkpoint=True but {self.args.output_dir} holds no checkpoint")
            state_file = Path(path) / STATE_FILE
            if state_file.exists():
                self._ema.load_state_dict(json.loads(state_file.read_text())["instance_weight_ema"])
            resume_from_checkpoint = path
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
