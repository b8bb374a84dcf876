"""`SGPOTrainer`: GRPO-style RL on autonomous rollouts plus strategy distillation on guided ones.

Orchestration only. The maths is one function, `sgpo.objectives.sgpo_loss`; the rollout of a
generation batch is a chain of named stages in `sgpo.stages` (docs/algorithm.md, "One step"):

    plan → sample → score → advantages → weights and selection → micro-batches → no-grad passes

1. plan: per problem `num_generations` autonomous prompts x and `num_guided_generations` guided
   prompts x ⊕ s; sample: all of them in one call of `_generate` (HF `generate`; the hook other
   engines replace);
2. score: the reward functions, correctness, acc_auto / acc_guided per problem;
3. advantages: group-relative, on the autonomous group (gathered over processes);
4. weights and selection: w_i (with the EMA over the whole generation batch, all processes), the
   guided completions to distil on (`distill_on`);
5. micro-batches: `steps_per_generation` micro-batches of whole problems, the loss normalisers
   counted over each whole optimizer step and all processes;
6. no-grad passes: π_old(y_t) and π_old(ỹ_t | x) when the batch is reused over several optimizer
   steps, the reference model when beta > 0, and the teacher's final hidden states on x ⊕ s ⊕ ỹ —
   the teacher is the policy *at rollout time*, so its LM head (weight and bias) is snapshotted when
   the batch outlives one optimizer step.

Each micro-step then runs one student forward (autonomous and distilled rows together, *without*
the strategy) and `sgpo_loss`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from accelerate.utils import is_peft_model
from transformers import AutoModelForCausalLM, PreTrainedModel, Trainer, TrainerCallback

from sgpo.checkpoints import STAGING_DIR, last_complete_checkpoint
from sgpo.config import SGPOConfig
from sgpo.data import ColumnMap, DataError, count_missing_strategies, load_problems
from sgpo.modeling import load_tokenizer
from sgpo.objectives import (
    GlobalCounts,
    InstanceWeightEMA,
    LossConfig,
    LossInputs,
    group_relative_advantages,
    head_functions,
    sampler_correction,
    sampler_correction_stats,
    sgpo_loss,
)
from sgpo.prompts import PromptFormat, tokenize_prompts
from sgpo.rewards import RewardFunc, resolve_reward_func, reward_func_name
from sgpo.rollout import Generation, eos_ids, generate_completions
from sgpo.sharding import full_lm_head, full_weights, model_sharding
from sgpo.stages import (
    MicroBatch,
    Packed,
    completion_facts,
    completion_hidden,
    consecutive_runs,
    first_autonomous_rows,
    group_stats,
    local_counts,
    no_grad_hidden,
    plan_rollouts,
    problem_weights,
    select,
    split_micro_batches,
    with_strong_responses,
)

logger = logging.getLogger(__name__)

# internal dataset columns (never passed to reward functions)
_PROMPT_IDS, _GUIDED_IDS, _PROMPT_TEXT, _GUIDED_TEXT = "_prompt_ids", "_guided_ids", "_prompt_text", "_guided_text"
_RESPONSE_IDS = "_response_ids"  # the strong response as completion tokens (mix_strong_responses)
_INTERNAL = (_PROMPT_IDS, _GUIDED_IDS, _PROMPT_TEXT, _GUIDED_TEXT, _RESPONSE_IDS)
STATE_FILE = "sgpo_state.json"
BUFFER_FILE = "rollout_buffer_rank{rank}.pt"  # a checkpoint taken inside a generation period keeps its rollouts
CONFIG_FILE = "config.yaml"
RUN_ARTIFACTS = ("metrics.jsonl", "trainer_state.json", "model.safetensors", "adapter_model.safetensors")


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned the wrong number of values, or a NaN / None."""


class OutputDirError(FileExistsError):
    """The output folder holds another run and the new one would mix with it."""


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


# ---------------------------------------------------------------------------------------- callbacks


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
    """Keeps the micro-step counter in line with a (possibly resumed) global step, and hands a
    resumed run the rollouts of the generation period its checkpoint was taken in."""

    def __init__(self, trainer: "SGPOTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer
        t._step = state.global_step * args.gradient_accumulation_steps
        t._buffer, t._resume_buffer = t._resume_buffer, None
        t._last_log_time = time.perf_counter()
        t._last_logged_step = state.global_step


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

    The data set is loaded, validated and tokenized before the model is loaded, so a bad row or an
    over-long prompt fails in seconds, not after the weights are read.
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

        # -- reward functions (cheap: resolve names before anything heavy)
        if reward_funcs is None:
            reward_funcs = list(args.reward_funcs)
        if isinstance(reward_funcs, str) or callable(reward_funcs):
            reward_funcs = [reward_funcs]
        self.reward_funcs: list[RewardFunc] = [resolve_reward_func(f) for f in reward_funcs]
        if not self.reward_funcs:
            raise ValueError("at least one reward function is needed")
        self.reward_func_names = [reward_func_name(f) for f in self.reward_funcs]
        weights = args.reward_weights if args.reward_weights is not None else [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(weights)} values for {len(self.reward_funcs)} reward functions")
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)

        # -- tokenizer, then the data: every row validated and every prompt tokenized before the model loads
        if processing_class is None:
            processing_class = load_tokenizer(model if isinstance(model, str) else model.config._name_or_path)
        tokenizer = processing_class
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "the tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token before training"
                )
            logger.warning("the tokenizer has no pad token; using its EOS token %r for padding", tokenizer.eos_token)
            tokenizer.pad_token = tokenizer.eos_token
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

        # -- the model
        if isinstance(model, str):
            from sgpo.adapters import is_adapter_folder, load_merged

            init_kwargs = dict(args.model_init_kwargs or {})
            if isinstance(init_kwargs.get("dtype"), str) and init_kwargs["dtype"] != "auto":
                init_kwargs["dtype"] = getattr(torch, init_kwargs["dtype"])
            if is_adapter_folder(model):  # an adapter trained earlier: its base with the adapter merged in
                model = load_merged(model, dtype=init_kwargs.get("dtype", "auto"))
            else:
                model = AutoModelForCausalLM.from_pretrained(model, **init_kwargs)
        for attr in ("final_logit_softcapping", "logit_scale"):
            if getattr(model.config, attr, None) not in (None, 1.0):
                raise NotImplementedError(
                    f"models with config.{attr} are not supported yet: SGPO applies the LM head itself to score tokens"
                )
        if args.disable_dropout:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        if args.use_peft:  # teacher and student are the same adapted model (sgpo.adapters)
            from sgpo.adapters import apply_lora

            if is_peft_model(model):
                raise ValueError("use_peft: the model already carries a PEFT adapter; merge it first (sgpo merge) or pass use_peft=False")
            zero3 = args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3
            model = apply_lora(model, args, zero3=zero3)
            if args.gradient_checkpointing:
                model.enable_input_require_grads()
        ref_model = None
        if args.beta > 0 and not is_peft_model(model):
            # a frozen copy of the initial policy (deep copy: keeps any custom head); with an adapter,
            # the base model with the adapter disabled is the initial policy (`_reference`)
            ref_model = copy.deepcopy(model).requires_grad_(False).eval()

        super().__init__(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.model_accepts_loss_kwargs = False
        if self.is_fsdp_enabled and self.accelerator.state.fsdp_plugin.fsdp_version != 2:
            raise ValueError("FSDP1 is not supported: SGPO reads the LM head directly, which FSDP2 provides for "
                             "(set fsdp_version: 2, e.g. configs/accelerate/fsdp2.yaml)")
        self.add_callback(MetricsJSONLCallback(Path(args.output_dir) / "metrics.jsonl"))
        self.add_callback(_StepSyncCallback(self))

        self.loss_config = LossConfig.from_args(args)
        self._eos = eos_ids(tokenizer, model)
        self._step = 0
        self._buffer: list[MicroBatch] | None = None
        self._resume_buffer: list[MicroBatch] | None = None
        self._ema = InstanceWeightEMA(args.instance_weight_ema)
        # `strategy_source` (own | retrieved, from `sgpo library retrieve`): guided metrics per source
        sources = dataset["strategy_source"] if "strategy_source" in dataset.column_names else []
        self.strategy_sources: list[str] = sorted({str(v) for v in sources if v})
        self._metric_keys: list[str] = self._all_metric_keys()
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, float] = defaultdict(float)
        self._last_log_time = time.perf_counter()
        self._last_logged_step = 0
        self._maxes: dict[str, float] = {}
        self._vllm = None  # the vLLM generator (use_vllm), started at the first rollout
        self._step_stack: ExitStack | None = None  # open during training_step (see compute_loss)
        self.ref_model = None if ref_model is None else self._prepare_reference(ref_model)

    def _prepare_reference(self, ref_model):
        """The frozen reference model, sharded like the policy (TRL's helpers under DeepSpeed / FSDP)."""
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(ref_model, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models.utils import prepare_fsdp

            return prepare_fsdp(ref_model, self.accelerator)
        return self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    @contextmanager
    def _reference(self):
        """The reference policy π_ref: the frozen copy, or the policy with its adapter disabled."""
        if self.ref_model is not None:
            yield self.ref_model
        else:
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                yield self.model

    # ------------------------------------------------------------------------------------ data

    def _tokenize_dataset(self, dataset, tokenizer, args: SGPOConfig, source_name: str):
        n_missing = count_missing_strategies(dataset)
        guided = args.num_guided_generations > 0
        if guided and n_missing == len(dataset):
            raise DataError(
                f"{source_name}: none of the {len(dataset)} problems has a usable strategy (column "
                f"{args.strategy_column!r} missing or empty), so there is nothing to distil: train GRPO with "
                "--num_guided_generations 0 --distill_coef 0, or add strategies with `sgpo extract`"
            )
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
        dataset = dataset.add_column(_GUIDED_TEXT, guided_texts).add_column(_GUIDED_IDS, guided_ids)
        if args.mix_strong_responses:
            dataset = dataset.add_column(_RESPONSE_IDS, self._tokenize_responses(dataset, tokenizer, args, source_name, names))
        return dataset

    @staticmethod
    def _tokenize_responses(dataset, tokenizer, args: SGPOConfig, source_name: str, names: list[str]) -> list[list[int]]:
        """The strong responses as completion tokens (EOS appended); every row needs one that fits in
        max_completion_length (a cut response would be trained on as if the strong model had stopped there)."""
        col = args.strong_response_column
        if col not in dataset.column_names:
            raise DataError(
                f"{source_name}: mix_strong_responses needs the strong responses in column {col!r}, which the data "
                f"does not have (columns: {', '.join(sorted(c for c in dataset.column_names if not c.startswith('_')))}); "
                "set strong_response_column"
            )
        texts = dataset[col]
        empty = [names[i] for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if empty:
            raise DataError(f"{source_name}: {len(empty)} row(s) without a strong response in column {col!r}: row {', row '.join(empty[:10])}")
        ids = [list(t) + [tokenizer.eos_token_id] for t in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
        long = [(names[i], len(t)) for i, t in enumerate(ids) if len(t) > args.max_completion_length]
        if long:
            shown = ", ".join(f"row {n} ({k} tokens)" for n, k in long[:10])
            raise DataError(
                f"{source_name}: {len(long)} strong response(s) longer than max_completion_length="
                f"{args.max_completion_length} (EOS included): {shown}; raise max_completion_length or drop these rows"
            )
        return ids

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

    def _prepare_inputs(self, generation_batch: list[dict]) -> MicroBatch:
        args = self.args
        period = args.steps_per_generation * args.num_iterations
        if self._buffer is None or self._step % period == 0:
            self._buffer = self._generate_and_score(generation_batch)
        micro = self._buffer[self._step % args.steps_per_generation]
        self._step += 1
        return micro

    def _generate(self, prompt_ids: list[list[int]]) -> Generation:
        """Stage "sample": one completion per prompt (override to plug in another generation engine):
        Hugging Face `generate`, or vLLM with `use_vllm`."""
        args = self.args
        model = self.accelerator.unwrap_model(self.model)
        if args.use_vllm:
            return self._generate_vllm(model, prompt_ids)
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

    def _generate_vllm(self, model, prompt_ids: list[list[int]]) -> Generation:
        """Sample with vLLM (docs/vllm.md): the copies of a prompt become one request for n samples;
        the engine gets the policy's weights whenever an optimizer step has changed them since the
        last push (a stale engine would sample from an old policy while the loss scores the new one)."""
        from sgpo.vllm_engine import make_vllm_generator

        sharded = model_sharding(model) != "none"
        if self._vllm is None:
            # a sharded model starts the engine from its folder and pushes its whole weights at once
            source = model.config._name_or_path if sharded else model
            self._vllm = make_vllm_generator(source, self.processing_class, self.args, self._eos)
            if self.args.vllm_mode == "colocate" and not sharded:  # started from the current weights
                self._vllm.synced_version = self.state.global_step
        version = self.state.global_step
        with self._timed("time/weight_sync_s"):
            if self.args.vllm_mode == "colocate":
                if self._vllm.synced_version != version:
                    with full_weights(model):  # ZeRO-3: gathered on every process (GPU-only, untested here)
                        self._vllm.sync_weights(model, version=version)
            else:  # one server: the main process pushes, the others wait for it
                if self._vllm.synced_version != version:
                    with full_weights(model):
                        if self.accelerator.is_main_process:
                            self._vllm.sync_weights(model, version=version)
                self.accelerator.wait_for_everyone()
        unique, counts = consecutive_runs(prompt_ids)
        return self._vllm.generate(unique, n=counts)

    def _close_vllm(self) -> None:
        if self._vllm is not None:
            engine, self._vllm = self._vllm, None
            engine.close()

    def _compute_rewards(
        self, prompts: list[str], completions: list[str], rows: list[dict], guided: list[bool]
    ) -> torch.Tensor:
        """Stage "score": (n,) weighted sum of the reward functions; errors name the function and the row."""
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

    def _advantages(self, auto_rewards: torch.Tensor) -> torch.Tensor:
        """Stage "advantages": group-relative, over the rewards of every process (a batch-scaled std
        is global, as in TRL); this process's share. (B·Ga,) -> (B·Ga,)"""
        gathered = self.accelerator.gather(auto_rewards.to(self.accelerator.device)).cpu()
        advantages = group_relative_advantages(gathered, self.args.num_generations, self.args.scale_rewards)
        n, rank = len(auto_rewards), self.accelerator.process_index
        return advantages[rank * n : (rank + 1) * n]

    def _instance_weights(self, stats, problems: list[dict]) -> torch.Tensor:
        """Stage "weights": w_i (B,), smoothed by the per-problem EMA when it is on. The EMA sees the
        problems of every process, so its state is the same on every rank (and in every checkpoint)."""
        weights = problem_weights(stats, self.args.instance_weighting)
        if self._ema.decay == 0.0:
            return weights
        from accelerate.utils import gather_object

        ids = [str(p["id"]) for p in problems]
        device = self.accelerator.device
        if self.accelerator.num_processes > 1:
            ids = gather_object(ids)
        all_w = self.accelerator.gather(weights.to(device)).cpu()
        has = self.accelerator.gather(stats.has_guided.long().to(device)).cpu().bool()
        smoothed = torch.zeros_like(all_w)
        if has.any():
            smoothed[has] = self._ema([ids[i] for i in has.nonzero().squeeze(1).tolist()], all_w[has])
        n, rank = len(problems), self.accelerator.process_index
        return smoothed[rank * n : (rank + 1) * n]

    @torch.no_grad()
    def _generate_and_score(self, problems: list[dict]) -> list[MicroBatch]:
        args = self.args
        t0 = time.perf_counter()
        S, GA = args.steps_per_generation, args.gradient_accumulation_steps
        if len(problems) % S:
            raise RuntimeError(f"generation batch of {len(problems)} problems does not split into {S} micro-batches")
        distill = args.distill_coef > 0

        # 1. plan and sample
        plan = plan_rollouts(
            [p[_PROMPT_IDS] for p in problems], [p[_PROMPT_TEXT] for p in problems],
            [p[_GUIDED_IDS] if p["strategy"] is not None else None for p in problems],
            [p[_GUIDED_TEXT] for p in problems], args.num_generations, args.num_guided_generations,
            self.processing_class.pad_token_id,
        )  # fmt: skip
        off_policy = first_autonomous_rows(plan) if args.mix_strong_responses else None
        with self._timed("time/generate_s"):
            if off_policy is None:
                gen = self._generate(plan.prompt_ids)
            else:  # LUFFY: one slot of each autonomous group holds the strong response instead of a sample
                sampled = self._generate([p for p, off in zip(plan.prompt_ids, off_policy.tolist()) if not off])
                gen = with_strong_responses(plan, sampled, off_policy, [p[_RESPONSE_IDS] for p in problems], self.processing_class)
        lengths, truncated = completion_facts(gen, self._eos)

        # 2. score
        with self._timed("time/rewards_s"):
            rows = [problems[i] for i in plan.owner.tolist()]
            rewards = self._compute_rewards(plan.prompt_texts, gen.texts, rows, plan.guided.tolist())
        stats = group_stats(rewards, plan, args.correct_reward_threshold)

        # 3. advantages (per row; 0 on guided rows)
        auto = ~plan.guided
        advantages = torch.zeros(len(rewards))
        advantages[auto] = self._advantages(rewards[auto])

        # 4. weights and selection
        weights = self._instance_weights(stats, problems)
        sel = select(gen, truncated, plan, stats.correct, weights, args.distill_on, args.mask_truncated_completions, distill)

        # 5. micro-batches, with the normalisers of each optimizer step over all processes
        need_teacher = distill and args.distill_divergence != "imitation"
        groups = self._source_index(problems)
        micro = split_micro_batches(gen, plan, sel, advantages, S, with_teacher=need_teacher, problem_groups=groups,
                                    off_policy=off_policy)
        counts = local_counts(plan, sel, S).view(S // GA, GA, 3).sum(1).to(self.accelerator.device)
        counts = self.accelerator.reduce(counts, reduction="sum").cpu()
        device = self.accelerator.device
        for k, mb in enumerate(micro):
            c = counts[k // GA]
            mb.auto_counts = GlobalCounts(float(c[0]), float(c[1]), args.max_completion_length)
            mb.distill_tokens = float(c[2])
            micro[k] = mb.to(device)

        # 6. no-grad passes
        self._no_grad_passes(micro)

        self._log_rollout(plan, rewards, stats, weights, sel, lengths, truncated, groups, off_policy)
        if off_policy is not None:
            self._add_metric("reward/strong_response", rewards[off_policy].sum().item(), int(off_policy.sum()))
        self._add_metric("time/generate_and_score_s", time.perf_counter() - t0, 1)
        return micro

    def _no_grad_passes(self, micro: list[MicroBatch]) -> None:
        """Stage "no-grad passes": old, reference and teacher quantities of every micro-batch.

        The old log-probs are needed only when the batch outlives one optimizer step (otherwise
        π_old = π_θ and the loss uses the detached current log-probs); the teacher is the policy at
        rollout time, so its LM head is snapshotted in that case too."""
        args = self.args
        reuse = args.steps_per_generation > args.gradient_accumulation_steps or args.num_iterations > 1
        # with another sampler (vLLM), π_old is always scored by the trainer: the RL term's ratio and
        # the importance weights of the sampler/trainer mismatch both need it (as in TRL)
        correct_sampler = args.use_vllm and args.vllm_importance_sampling_correction
        t_w = t_b = None
        if reuse and any(mb.teacher is not None for mb in micro):
            with self._full_lm_head(self.model) as (head_w, head_b):
                t_w = head_w.detach().clone()
                t_b = None if head_b is None else head_b.detach().clone()
        fmb = args.forward_micro_batch_size
        for mb in micro:
            na = mb.n_auto
            if reuse or correct_sampler:
                # one pass for the old log-probs of the autonomous rows and, when the proximal mask
                # needs them, of the distilled rows (both under the autonomous prompt)
                both = mb.student.num_rows > na and args.distill_proximal
                rows = mb.student if both else mb.student.rows(slice(0, na))
                mask = torch.cat([mb.auto_mask, mb.distill_mask]) if both else mb.auto_mask
                with self._timed("time/old_logps_s"):
                    old = self._score_logps(self.model, rows, mask)
                mb.old_logps = old[:na]
                if both:
                    mb.distill_old_logps = old[na:]
            if correct_sampler and mb.sampler_logps is not None:
                self._importance_weights(mb)
            if args.beta > 0:
                with self._timed("time/reference_s"), self._reference() as ref:
                    mb.ref_logps = self._score_logps(ref, mb.student.rows(slice(0, na)), mb.auto_mask)
            if mb.teacher is not None:
                with self._timed("time/teacher_s"):
                    mb.teacher_hidden = no_grad_hidden(self.model, mb.teacher, fmb)
                mb.teacher_weight, mb.teacher_bias = t_w, t_b

    def _importance_weights(self, mb: MicroBatch) -> None:
        """Truncated importance weights π_old / π_sampler of the autonomous tokens (TRL's modes), and
        their figures: `sampling/importance_sampling_ratio/{min,mean,max}`, `sampling/sampling_logp_difference/{mean,max}`."""
        a = self.args
        ratio = sampler_correction(
            mb.old_logps, mb.sampler_logps, mb.auto_mask, a.vllm_importance_sampling_mode,
            a.vllm_importance_sampling_clip_max, a.vllm_importance_sampling_clip_min,
        )  # fmt: skip
        mb.is_weights = ratio.expand_as(mb.auto_mask).contiguous()
        st = sampler_correction_stats(ratio, mb.old_logps, mb.sampler_logps, mb.auto_mask)
        key = "sampling/importance_sampling_ratio"
        self._add_metric(f"{key}/mean", st.ratio_sum, st.num_ratios)
        self._add_metric("sampling/sampling_logp_difference/mean", st.logp_gap_sum, st.num_tokens)
        if st.num_ratios:
            self._add_extreme(f"{key}/max", st.ratio_max)
            self._add_extreme(f"{key}/min", -st.ratio_min)  # kept negated: every extreme is a max
        if st.num_tokens:
            self._add_extreme("sampling/sampling_logp_difference/max", st.logp_gap_max)

    @torch.no_grad()
    def _score_logps(self, model, rows: Packed, mask: torch.Tensor) -> torch.Tensor:
        """No-grad log-probs of the completion tokens under `mask`. -> (R, C), 0 elsewhere"""
        h = no_grad_hidden(model, rows, self.args.forward_micro_batch_size)
        sel = mask.bool()
        out = torch.zeros(sel.shape, dtype=torch.float32, device=h.device)
        with self._full_lm_head(model) as (weight, bias):  # after the forward, and on every process alike
            if sel.any():
                sampled_logps, _ = head_functions(self.loss_config.head)
                kw = {"chunk_size": self.args.head_chunk_size} if self.loss_config.head == "chunked" else {}
                out[sel] = sampled_logps(h[sel], weight, rows.completion_ids[sel], self.args.temperature, bias, **kw).float()
        return out

    def _lm_head(self, model) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The LM head's weight and bias parameters as the model holds them (sharded under FSDP2 /
        ZeRO-3: read them through `_full_lm_head`)."""
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        return head.weight, getattr(head, "bias", None)

    def _full_lm_head(self, model, with_grad: bool = False):
        """Context: the whole LM head (weight, bias) of `model` under any engine (`sgpo.sharding`)."""
        return full_lm_head(self.accelerator.unwrap_model(model), with_grad=with_grad)

    def _source_index(self, problems: list[dict]) -> torch.Tensor | None:
        """(B,) index of each problem's `strategy_source` in `self.strategy_sources` (-1: none)."""
        if not self.strategy_sources:
            return None
        lookup = {name: k for k, name in enumerate(self.strategy_sources)}
        return torch.tensor([lookup.get(str(p.get("strategy_source")), -1) for p in problems], dtype=torch.long)

    def _log_rollout(self, plan, rewards, stats, weights, sel, lengths, truncated, groups=None, off_policy=None) -> None:
        """Metrics of one generation batch (this process; the logger sums over processes).
        `tokens/generated` counts the sampled tokens only (not LUFFY's inserted strong responses)."""
        auto = ~plan.guided
        n_prob, Gg = plan.num_problems, self.args.num_guided_generations
        self._add_metric("reward/auto", rewards[auto].sum().item(), int(auto.sum()))
        self._add_metric("accuracy/auto", stats.acc_auto.sum().item(), n_prob)
        self._add_metric("completion_length/auto", lengths[auto].float().sum().item(), int(auto.sum()))
        self._add_metric("completions/truncated_frac", truncated.float().sum().item(), len(truncated))
        sampled = lengths if off_policy is None else lengths[~off_policy]
        self._add_metric("tokens/generated", float(sampled.sum()), 0)
        g = stats.has_guided
        if g.any():
            self._add_metric("reward/guided", rewards[plan.guided].sum().item(), int(plan.guided.sum()))
            self._add_metric("reward/gap", (stats.reward_guided[g] - stats.reward_auto[g]).sum().item(), int(g.sum()))
            self._add_metric("accuracy/guided", stats.acc_guided[g].sum().item(), int(g.sum()))
            self._add_metric("completion_length/guided", lengths[plan.guided].float().sum().item(), int(plan.guided.sum()))
            self._add_metric("distill/weight_mean", weights[g].sum().item(), int(g.sum()))
            self._add_metric("distill/weighted_frac", (weights[g] > 0).float().sum().item(), int(g.sum()))
            self._add_metric("distill/selected_sequences", float(sel.selected.sum()), 0)
        self._add_metric("problems/without_strategy_frac", float((~g).sum()) if Gg else 0.0, n_prob)
        for k, name in enumerate(self.strategy_sources):  # own vs retrieved strategies (docs/strategy-library.md)
            m = g & (groups == k)
            n = int(m.sum())
            self._add_metric(f"accuracy/guided/{name}", stats.acc_guided[m].sum().item(), n)
            self._add_metric(f"reward/gap/{name}", (stats.reward_guided[m] - stats.reward_auto[m]).sum().item(), n)
            self._add_metric(f"distill/weight_mean/{name}", weights[m].sum().item(), n)

    # ------------------------------------------------------------------------------------ loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        # generation happens in _prepare_inputs (inside super().training_step): time it separately
        t0 = time.perf_counter()
        gen_before = self._sums.get("time/generate_and_score_s", 0.0)
        # what compute_loss gathers for the loss (the LM head under ZeRO-3) stays gathered through the backward
        with ExitStack() as self._step_stack:
            loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_stack = None
        gen_time = self._sums.get("time/generate_and_score_s", 0.0) - gen_before
        self._add_metric("time/train_step_s", time.perf_counter() - t0 - gen_time, 0)
        return loss

    def compute_loss(self, model, inputs: MicroBatch, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise ValueError("SGPOTrainer does not return outputs")
        mb, na = inputs, inputs.n_auto
        hidden = completion_hidden(model, mb.student)  # (Na + Nd, C, H), one forward without the strategy
        # the whole LM head, entered after the forward and held through the backward (sgpo.sharding)
        stack = self._step_stack if self._step_stack is not None else ExitStack()
        weight, bias = stack.enter_context(self._full_lm_head(model, with_grad=True))
        ids = mb.student.completion_ids
        out = sgpo_loss(
            LossInputs(
                head_weight=weight, head_bias=bias,
                auto_hidden=hidden[:na], auto_ids=ids[:na], auto_mask=mb.auto_mask, advantages=mb.advantages,
                auto_counts=mb.auto_counts, old_logps=mb.old_logps, ref_logps=mb.ref_logps, is_weights=mb.is_weights,
                distill_hidden=hidden[na:], distill_ids=ids[na:], distill_mask=mb.distill_mask,
                distill_weights=mb.distill_weights, teacher_hidden=mb.teacher_hidden, teacher_weight=mb.teacher_weight,
                teacher_bias=mb.teacher_bias, distill_old_logps=mb.distill_old_logps, distill_tokens=mb.distill_tokens,
                auto_off_policy=mb.auto_off_policy,
            ),
            self.loss_config,
        )  # fmt: skip
        for key, (total, count) in out.metrics.items():
            self._add_metric(key, total, count)
        if out.distill_kl_per_row is not None and mb.distill_groups is not None:
            tokens = mb.distill_mask.sum(1).float()
            for k, name in enumerate(self.strategy_sources):
                rows = mb.distill_groups == k
                self._add_metric(f"distill/kl/{name}", out.distill_kl_per_row[rows].sum().item(), tokens[rows].sum().item())
        return out.loss * self.accelerator.num_processes  # DDP averages gradients over processes

    # ------------------------------------------------------------------------------------ logging

    def _all_metric_keys(self) -> list[str]:
        keys = [
            "reward/auto", "reward/guided", "reward/gap", "accuracy/auto", "accuracy/guided",
            "completion_length/auto", "completion_length/guided", "completions/truncated_frac",
            "distill/weight_mean", "distill/weighted_frac", "distill/selected_sequences", "distill/kl",
            "distill/masked_frac", "distill/loss", "distill/tokens", "rl/loss", "clip/low", "clip/high",
            "clip/region", "kl_ref", "problems/without_strategy_frac", "tokens/generated", "reward/strong_response",
        ]  # fmt: skip
        keys += [f"time/{k}_s" for k in ("generate_and_score", "generate", "weight_sync", "rewards", "old_logps", "reference", "teacher", "train_step")]
        keys += ["sampling/importance_sampling_ratio/mean", "sampling/sampling_logp_difference/mean"]
        for name in self.strategy_sources:
            keys += [f"accuracy/guided/{name}", f"reward/gap/{name}", f"distill/weight_mean/{name}", f"distill/kl/{name}"]
        return keys + [f"rewards/{n}" for n in self.reward_func_names]

    #: metrics logged as the extreme over the logging window and the processes (minima kept negated)
    EXTREMES = ("sampling/importance_sampling_ratio/max", "sampling/importance_sampling_ratio/min",
                "sampling/sampling_logp_difference/max")

    @contextmanager
    def _timed(self, key: str):
        """Adds the wall time of the block to metric `key` (seconds per logging window)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._add_metric(key, time.perf_counter() - t0, 0)

    def _add_extreme(self, key: str, value: float) -> None:
        """Keep the largest `value` of metric `key` in this logging window."""
        self._maxes[key] = max(self._maxes.get(key, -math.inf), float(value))

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
            steps = max(self.state.global_step - self._last_logged_step, 1)
            now = time.perf_counter()
            for k, (total, count, present) in zip(keys, vals.tolist()):
                if not present:
                    continue
                if k == "tokens/generated":
                    logs[k] = total  # sampled since the last log
                    logs["tokens_per_second"] = total / max(now - self._last_log_time, 1e-9)
                elif k in ("rl/loss", "distill/loss"):
                    logs[k] = total / steps  # per optimizer step, like "loss"
                elif k in ("distill/tokens", "distill/selected_sequences") or k.startswith("time/"):
                    logs[k] = total
                elif count > 0:
                    logs[k] = total / count
            extremes = torch.tensor([self._maxes.get(k, -math.inf) for k in self.EXTREMES], dtype=torch.float64,
                                    device=self.accelerator.device)
            extremes = self.accelerator.gather(extremes.unsqueeze(0)).amax(0).cpu().tolist()
            for k, v in zip(self.EXTREMES, extremes):
                if v != -math.inf:
                    logs[k] = -v if k.endswith("/min") else v
            self._last_log_time = now
            self._last_logged_step = self.state.global_step
            self._sums.clear()
            self._counts.clear()
            self._maxes.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------ state

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        # evaluation and selectivity prompt the model the way it was trained
        self.prompt_format.save(output_dir or self.args.output_dir)

    def _get_output_dir(self, trial) -> str:
        # while a checkpoint is written (`_save_checkpoint`), Hugging Face writes into the staging folder
        staging = getattr(self, "_staging_dir", None)
        return str(staging) if staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """Hugging Face's checkpoint (model, optimizer, scheduler, RNG states, trainer state with the
        data position) plus the instance-weight EMA and the rollout buffer, written whole into
        `STAGING_DIR/checkpoint-N` and then renamed to `checkpoint-N`: a run killed while saving
        leaves the previous checkpoints as they were, and every `checkpoint-N` is complete."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = run_dir / STAGING_DIR
        if self.args.should_save and (staging / name).exists():  # left by a run killed while saving
            shutil.rmtree(staging / name)
        self.accelerator.wait_for_everyone()
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # rotated below, once renamed
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir, self.args.save_total_limit = None, limit
        folder = staging / name
        if self.args.should_save:
            (folder / STATE_FILE).write_text(json.dumps({"instance_weight_ema": self._ema.state_dict()}))
        period = self.args.steps_per_generation * self.args.num_iterations
        if self._buffer is not None and self._step % period:
            # inside a generation period: the rest of the period trains on these rollouts (π_old,
            # the teacher and the samples are of the policy at the start of the period), so a resumed
            # run needs them, not a fresh sample from the current policy
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / BUFFER_FILE.format(rank=self.accelerator.process_index)
            torch.save([mb.to("cpu") for mb in self._buffer], path)
        self.accelerator.wait_for_everyone()  # every process has written its part
        if self.args.should_save:
            target = run_dir / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(folder, target)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        path = None
        if resume_from_checkpoint:
            path = resume_from_checkpoint
            if path is True:
                path = last_complete_checkpoint(self.args.output_dir)
                if path is None:
                    raise ValueError(f"resume_from_checkpoint=True but {self.args.output_dir} holds no checkpoint")
            state_file = Path(path) / STATE_FILE
            if state_file.exists():
                self._ema.load_state_dict(json.loads(state_file.read_text())["instance_weight_ema"])
            buffer = Path(path) / BUFFER_FILE.format(rank=self.accelerator.process_index)
            if buffer.exists():
                self._resume_buffer = [mb.to(self.accelerator.device) for mb in torch.load(buffer, weights_only=False)]
            resume_from_checkpoint = str(path)
        self._prepare_output_dir(path)
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self._close_vllm()  # free the engine's memory for whatever runs next (a later train() starts a new one)

    def _prepare_output_dir(self, resume_path: str | None) -> None:
        """A fresh run refuses an output folder that holds another run (unless `overwrite_output_dir`,
        which clears its metrics and checkpoints); a resumed run keeps the metrics up to its step.
        The resolved settings are written to `config.yaml` and the batch sizes are logged."""
        args = self.args
        out = Path(args.output_dir)
        metrics = out / "metrics.jsonl"
        previous = []
        if resume_path is None:  # every process looks (the same folder), so every process raises alike
            previous = sorted(p.name for p in out.glob("checkpoint-*")) + [n for n in (*RUN_ARTIFACTS, STAGING_DIR) if (out / n).exists()]
            if previous and not args.overwrite_output_dir:
                raise OutputDirError(
                    f"output_dir {out} already holds a run ({', '.join(previous[:3])}{', …' if len(previous) > 3 else ''}): "
                    "resume it with --resume_from_checkpoint true, pick another --output_dir, or pass --overwrite_output_dir"
                )
        self.accelerator.wait_for_everyone()
        if self.is_world_process_zero():
            for name in previous:
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            if previous:
                logger.warning("overwrite_output_dir: removed %s from %s", ", ".join(previous), out)
            if resume_path is not None and metrics.exists():
                step = json.loads((Path(resume_path) / "trainer_state.json").read_text()).get("global_step", 0)
                kept = [line for line in metrics.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
                metrics.write_text("".join(line + "\n" for line in kept))
            out.mkdir(parents=True, exist_ok=True)
            import yaml

            (out / CONFIG_FILE).write_text(yaml.safe_dump(args.to_dict(), sort_keys=False))
            logger.info("%s", self.batch_summary())
        self.accelerator.wait_for_everyone()

    def batch_summary(self) -> str:
        """Problems and completions per optimizer step, per process and over all processes, and the
        number of optimizer steps the run will take (`sgpo.planning.batch_plan`)."""
        from sgpo.planning import batch_plan

        plan = batch_plan(self.args, self.accelerator.num_processes, len(self.train_dataset))
        return plan.describe(self.args.num_generations, self.args.num_guided_generations)
