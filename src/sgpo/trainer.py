"""`SGPOTrainer`: GRPO-style RL on autonomous rollouts plus strategy distillation on guided ones.

The Hugging Face hooks and the loop over the rollout's phases, nothing else. The maths is one
function, `sgpo.objectives.sgpo_loss`; the phases of a generation batch are functions in
`sgpo.phases` (docs/algorithm.md, "One step"):

    plan → sample → score → advantages → weights and selection → micro-batches → no-grad passes

1. plan: per problem `num_generations` autonomous prompts x and `num_guided_generations` guided
   prompts x ⊕ s; sample: all of them in one call of `_generate` (HF `generate`; the hook other
   engines replace; vLLM with `use_vllm`, `sgpo.vllm_engine`);
2. score: the reward functions (`sgpo.rewards`), correctness, acc_auto / acc_guided per problem;
3. advantages: group-relative, on the autonomous group (gathered over processes);
4. weights and selection: w_i (with the EMA over the whole generation batch, all processes), the
   guided completions to distil on (`distill_on`);
5. micro-batches: `steps_per_generation` micro-batches of whole problems, the loss normalisers
   counted over each whole optimizer step and all processes;
6. no-grad passes (`_no_grad_passes`): π_old(y_t) and π_old(ỹ_t | x) when the batch is reused over
   several optimizer steps, the reference model when beta > 0, and the teacher's final hidden states
   on x ⊕ s ⊕ ỹ — the teacher is the policy *at rollout time*, so its LM head (weight and bias) is
   snapshotted when the batch outlives one optimizer step.

Each micro-step then runs one student forward (autonomous and distilled rows together, *without*
the strategy) and `sgpo_loss` on the micro-batch's `LossInputs`. Elsewhere: the data set's
tokenising (`sgpo.data`), model loading (`sgpo.modeling`, `sgpo.adapters`), metrics
(`sgpo.train_metrics`), the output folder and checkpoints (`sgpo.checkpoints`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType, is_peft_model
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl.models.utils import prepare_deepspeed, prepare_fsdp

from sgpo.adapters import apply_lora
from sgpo.checkpoints import (
    METRICS_FILE,
    Preemption,
    TrainingPreempted,
    prepare_run_folder,
    previous_run,
    publish_checkpoint,
    read_rollout_buffer,
    read_state,
    resume_path,
    staging_folder,
    write_rollout_buffer,
    write_state,
)
from sgpo.config import SGPOConfig
from sgpo.data import (
    GUIDED_IDS,
    GUIDED_TEXT,
    PROMPT_IDS,
    PROMPT_TEXT,
    RESPONSE_IDS,
    DataError,
    count_missing_strategies,
    training_problems,
    trl_prompt_format,
)
from sgpo.modeling import load_model, load_tokenizer
from sgpo.objectives import (
    InstanceWeightEMA,
    LossConfig,
    sgpo_loss,
)
from sgpo.phases import (
    MicroBatch,
    Packed,
    Rollout,
    backward_groups,
    completion_facts,
    completion_hidden,
    consecutive_runs,
    first_autonomous_rows,
    global_advantages,
    group_stats,
    local_counts,
    no_grad_hidden,
    plan_rollouts,
    problem_weights,
    sampler_weights,
    score_logps,
    select,
    set_step_normalisers,
    smoothed_problem_weights,
    source_index,
    split_micro_batches,
    with_strong_responses,
)
from sgpo.planning import batch_plan
from sgpo.rewards import RewardFunc, RewardFunctions
from sgpo.rollout import Generation, eos_ids, generate_completions
from sgpo.sharding import full_lm_head
from sgpo.train_metrics import (
    CompletionLog,
    MetricsJSONLCallback,
    MetricWindow,
    log_reward_spread,
    log_rollout,
    log_sampler_correction,
    metric_keys,
)
from sgpo.vllm_engine import push_weights, start_vllm

logger = logging.getLogger(__name__)


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


class _StepSyncCallback(TrainerCallback):
    """Keeps the micro-step counter in line with a (possibly resumed) global step, and hands a
    resumed run the rollouts of the generation period its checkpoint was taken in."""

    def __init__(self, trainer: SGPOTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer
        t._step = state.global_step * args.gradient_accumulation_steps
        t._buffer, t._resume_buffer = t._resume_buffer, None
        t.metrics.start(state.global_step)


class PreemptionCallback(TrainerCallback):
    """On SIGTERM / SIGUSR1 (`sgpo.checkpoints.Preemption`): a checkpoint and a stop at the end of the
    optimizer step under way, decided alike on every process (one process may be signalled alone)."""

    def __init__(self, trainer: SGPOTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        stop = t._preemption.received is not None
        if t.accelerator.num_processes > 1:
            flag = torch.tensor([float(stop)], device=t.accelerator.device)
            stop = bool(t.accelerator.reduce(flag, reduction="sum").item() > 0)
            t._preemption.received = t._preemption.received or ("SIGTERM" if stop else None)
        if stop:
            control.should_save = True
            control.should_training_stop = True


# ---------------------------------------------------------------------------------------- the policy


def prepare_policy(model: PreTrainedModel, args: SGPOConfig, peft_config=None) -> tuple[PreTrainedModel, PreTrainedModel | None]:
    """(policy, frozen reference or None) for training: checks that SGPO can apply the model's LM head
    itself, turns dropout off (`disable_dropout`), wraps the policy in a LoRA adapter (`use_peft`:
    or `peft_config`: teacher and student are the same adapted model, `sgpo.adapters`), and copies the initial policy as
    the reference when beta > 0 (with an adapter, the base model with the adapter disabled is the
    reference instead: `SGPOTrainer._reference`)."""
    for attr in ("final_logit_softcapping", "logit_scale"):
        if getattr(model.config, attr, None) not in (None, 1.0):
            raise NotImplementedError(
                f"models with config.{attr} are not supported yet: SGPO applies the LM head itself to score tokens"
            )
    if args.disable_dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    if args.use_peft or peft_config is not None:
        if is_peft_model(model):
            raise ValueError(
                "use_peft: the model already carries a PEFT adapter; merge it first (sgpo merge) or pass use_peft=False"
            )
        zero3 = args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3
        model = apply_lora(model, args, zero3=zero3, peft_config=peft_config)
        if args.gradient_checkpointing:
            model.enable_input_require_grads()
    ref_model = None
    if args.beta > 0 and not is_peft_model(model):  # a deep copy keeps any custom head
        ref_model = copy.deepcopy(model).requires_grad_(False).eval()
    return model, ref_model


def prepare_tokenizer(tokenizer):
    """`tokenizer`, padding with its EOS token when it has no pad token (as TRL does)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token before training")
        logger.warning("the tokenizer has no pad token; using its EOS token %r for padding", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------------------------------- backward in groups


@contextmanager
def early_group(accelerator, model):
    """Context for the forward + backward of a group of sequences that is not its micro-step's last
    (`backward_group_size`); yields its backward. The group's gradient accumulates locally: no process
    synchronises it (DDP's and FSDP2's no_sync; the last group's backward reduces the sum), and
    DeepSpeed is told that this is no accumulation boundary and takes no step (the Trainer's backward of
    the last group does that)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        engine = accelerator.deepspeed_engine_wrapped.engine
        engine.set_gradient_accumulation_boundary(False)
        try:
            yield lambda loss: engine.backward(loss, scale_wrt_gas=False)  # as the Trainer calls it
        finally:
            engine.set_gradient_accumulation_boundary(accelerator.sync_gradients)
        return
    # under FSDP2 the Trainer's own no_sync (a micro-step that ends no optimizer step) is already on,
    # and a nested one would switch synchronisation back on when it ends
    nested = accelerator.is_fsdp2 and not accelerator.sync_gradients
    with nullcontext() if nested else accelerator.no_sync(model):
        yield accelerator.backward


# ---------------------------------------------------------------------------------------- trainer


def checked_arguments(name: str, args: SGPOConfig | None, train_dataset: Any, reward_processing_classes: Any) -> SGPOConfig:
    """`args` (a default config named after the model when None), after the checks of what
    `SGPOTrainer` is given that need no loading."""
    if args is None:
        args = SGPOConfig(output_dir=f"{str(name).split('/')[-1]}-SGPO")
    if not isinstance(args, SGPOConfig):
        raise TypeError(
            f"args must be an SGPOConfig, got {type(args).__name__} (TRL's order: model, reward_funcs, args, train_dataset)"
        )
    if train_dataset is None:
        raise DataError("SGPOTrainer needs a train_dataset (a datasets.Dataset or a .jsonl/.json/.parquet path)")
    if reward_processing_classes is not None:
        raise ValueError("reward_processing_classes: reward models are not supported; give reward functions")
    return args


class SGPOTrainer(Trainer):
    """Strategy-Guided Policy Optimization on top of `transformers.Trainer`, in TRL's `GRPOTrainer` shape:
    `SGPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset=None, processing_class=None,
    reward_processing_classes=None, callbacks=None, optimizers=(None, None), peft_config=None)`.

    Args:
        model: a causal LM, or a path / hub id loaded with `args.model_init_kwargs` (an adapter folder
            is its base with the adapter merged in: `sgpo.modeling.load_model`).
        reward_funcs: callables with TRL's signature `f(prompts, completions, **kwargs) -> list[float | None]`,
            registry names, `module:function` or `file.py:function` strings (`args.reward_funcs` when None;
            `sgpo.rewards`).
        args: an `SGPOConfig`.
        train_dataset: a `datasets.Dataset` / `IterableDataset` / list of rows, or a path to a JSONL / JSON /
            parquet file, with columns `problem` (or TRL's `prompt`, standard or conversational), `answer`
            (or TRL's `solution`), and optionally `strategy` and `id` (names set in `args`).
        eval_dataset: the same kind of data; `evaluate()` samples its prompts and logs `eval_*` rewards.
        processing_class: the tokenizer (loaded from the model path when None). Without a pad token,
            the EOS token is used for padding (as TRL does).
        reward_processing_classes: TRL's tokenizers of reward models, which sgpo does not support (None).
        peft_config: a PEFT `LoraConfig`: train that adapter (instead of the `lora_*` fields of `args`).

    The data set is loaded, validated and tokenized before the model is loaded, so a bad row or an
    over-long prompt fails in seconds, not after the weights are read.
    """

    _tag_names = ["sgpo"]
    loss_is_scaled_for_ga = True  # compute_loss already divides by the global, per-step normalisers

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: Sequence[str | RewardFunc] | str | RewardFunc | None = None,
        args: SGPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        peft_config=None,
    ):
        name = model if isinstance(model, str) else model.config._name_or_path
        args = checked_arguments(name, args, train_dataset, reward_processing_classes)
        # cheap first: the reward functions, then every row validated and every prompt tokenized
        specs = list(args.reward_funcs) if reward_funcs is None else reward_funcs
        self.rewards = RewardFunctions(specs, args.reward_weights, args.correctness_reward)
        if self.rewards.correctness_note:
            logger.warning("%s", self.rewards.correctness_note)
        tokenizer = prepare_tokenizer(processing_class if processing_class is not None else load_tokenizer(name))
        dataset, self.prompt_format = training_problems(train_dataset, tokenizer, args)
        self.conversational = trl_prompt_format(dataset) == "conversational"
        self.num_problems_without_strategy = count_missing_strategies(dataset)
        eval_data = None if eval_dataset is None else training_problems(eval_dataset, tokenizer, args, what="eval_dataset")[0]
        # then the model
        if isinstance(model, str):
            model = load_model(model, **(args.model_init_kwargs or {}))
        model, ref_model = prepare_policy(model, args, peft_config)

        super().__init__(
            model=model,
            args=args,
            train_dataset=dataset,
            eval_dataset=eval_data,
            processing_class=tokenizer,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self._finish_init(dataset, tokenizer, model, ref_model, name, train_dataset)

    def _finish_init(self, dataset, tokenizer, model, ref_model, name, source) -> None:
        args = self.args
        self.model_accepts_loss_kwargs = False
        if self.is_fsdp_enabled and self.accelerator.state.fsdp_plugin.fsdp_version != 2:
            raise ValueError("FSDP1 is not supported: SGPO reads the LM head directly, which FSDP2 provides for "
                             "(set fsdp_version: 2, e.g. configs/accelerate/fsdp2.yaml)")  # fmt: skip
        self.add_callback(MetricsJSONLCallback(Path(args.output_dir) / METRICS_FILE))
        self.add_callback(_StepSyncCallback(self))
        self.add_callback(PreemptionCallback(self))
        self._preemption = Preemption()
        # what reruns this run (written to config.yaml beside the settings): the model and the data as given
        self.run_sources = {"model_name_or_path": str(name)}
        if isinstance(source, (str, Path)):
            self.run_sources["dataset_name"] = str(source)

        self.loss_config = LossConfig.from_args(args)
        self._eos = eos_ids(tokenizer, model)
        self._step = 0
        self._buffer: list[MicroBatch] | None = None
        self._resume_buffer: list[MicroBatch] | None = None
        self._ema = InstanceWeightEMA(args.instance_weight_ema)
        # `strategy_source` (own | retrieved, from `sgpo library retrieve`): guided metrics per source
        sources = dataset["strategy_source"] if "strategy_source" in dataset.column_names else []
        self.strategy_sources: list[str] = sorted({str(v) for v in sources if v})
        self.metrics = MetricWindow(metric_keys(self.strategy_sources, self.rewards.names))
        self.completion_log = CompletionLog(args.num_completions_to_print) if args.log_completions else None
        self._vllm = None  # the vLLM generator (use_vllm), started at the first rollout
        self._step_stack: ExitStack | None = None  # open during training_step (see compute_loss)
        self.ref_model = None if ref_model is None else self._prepare_reference(ref_model)

    def _prepare_reference(self, ref_model):
        """The frozen reference model, sharded like the policy (TRL's helpers under DeepSpeed / FSDP)."""
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(ref_model, self.accelerator)
        if self.is_fsdp_enabled:
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
        """Phase "sample": one completion per prompt (override to plug in another generation engine):
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
        last push (`sgpo.vllm_engine.push_weights`)."""
        version = self.state.global_step
        if self._vllm is None:
            self._vllm = start_vllm(model, self.processing_class, self.args, self._eos, version)
        with self.metrics.timed("time/weight_sync_s"):
            push_weights(self._vllm, model, version, self.args.vllm_mode, self.accelerator)
        unique, counts = consecutive_runs(prompt_ids)
        return self._vllm.generate(unique, n=counts)

    def _close_vllm(self) -> None:
        if self._vllm is not None:
            engine, self._vllm = self._vllm, None
            engine.close()

    def _score(
        self, gen: Generation, rows: list[dict], guided: list[bool], metrics: MetricWindow
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Phase "score": (weighted sum (n,), each function's rewards (n, F), NaN where one returned None,
        the values that decide correctness (n,)); errors name the function and the row."""
        texts = [[{"role": "assistant", "content": t}] for t in gen.texts] if self.conversational else gen.texts
        rewards, per_func = self.rewards(texts, rows, guided, gen.completion_lists(), self.state)
        for f_idx, name in enumerate(self.rewards.names):
            scored = ~torch.isnan(per_func[:, f_idx])
            metrics.add(f"rewards/{name}", per_func[scored, f_idx].sum().item(), int(scored.sum()))
        return rewards, per_func, self.rewards.correct_values(rewards, per_func)

    @torch.no_grad()
    def _rollout(self, problems: list[dict], metrics: MetricWindow, off_policy_slots: bool = False) -> Rollout:
        """Phases "plan", "sample" and "score" of `problems` (timed and logged into `metrics`)."""
        args = self.args
        plan = plan_rollouts(
            [p[PROMPT_IDS] for p in problems], [p[PROMPT_TEXT] for p in problems],
            [p[GUIDED_IDS] if p["strategy"] is not None else None for p in problems],
            [p[GUIDED_TEXT] for p in problems], args.num_generations, args.num_guided_generations,
            self.processing_class.pad_token_id,
        )  # fmt: skip
        off_policy = first_autonomous_rows(plan) if off_policy_slots else None
        with metrics.timed("time/generate_s"):
            if off_policy is None:
                gen = self._generate(plan.prompt_ids)
            else:  # LUFFY: one slot of each autonomous group holds the strong response instead of a sample
                sampled = self._generate([p for p, off in zip(plan.prompt_ids, off_policy.tolist()) if not off])
                gen = with_strong_responses(plan, sampled, off_policy, [p[RESPONSE_IDS] for p in problems], self.processing_class)
        lengths, truncated = completion_facts(gen, self._eos)
        with metrics.timed("time/rewards_s"):
            rows = [problems[i] for i in plan.owner.tolist()]
            rewards, per_func, correct_values = self._score(gen, rows, plan.guided.tolist(), metrics)
        stats = group_stats(rewards, plan, args.correct_reward_threshold, correct_values)
        return Rollout(plan, gen, off_policy, lengths, truncated, rewards, per_func, stats)

    @torch.no_grad()
    def _generate_and_score(self, problems: list[dict]) -> list[MicroBatch]:
        args, metrics = self.args, self.metrics
        t0 = time.perf_counter()
        S, GA = args.steps_per_generation, args.gradient_accumulation_steps
        if len(problems) % S:
            raise RuntimeError(f"generation batch of {len(problems)} problems does not split into {S} micro-batches")
        distill = args.distill_coef > 0

        # 1.-2. plan, sample and score
        r = self._rollout(problems, metrics, off_policy_slots=args.mix_strong_responses)
        plan, gen, off_policy, rewards, stats = r.plan, r.gen, r.off_policy, r.rewards, r.stats

        # 3. advantages (per row; 0 on guided rows)
        auto = ~plan.guided
        advantages = torch.zeros(len(rewards))
        advantages[auto], all_rewards = global_advantages(
            rewards[auto], self.accelerator, args.num_generations, args.scale_rewards
        )
        if self.accelerator.is_main_process:
            log_reward_spread(metrics, all_rewards, args.num_generations)
            if self.completion_log is not None:
                per = {n: r.per_func[:, k].tolist() for k, n in enumerate(self.rewards.names)}
                self.completion_log.record(plan.prompt_texts, gen.texts, per, advantages.tolist(), plan.guided.tolist())

        # 4. weights and selection
        weights = smoothed_problem_weights(stats, problems, args.instance_weighting, self._ema, self.accelerator)
        sel = select(gen, r.truncated, plan, stats.correct, weights, args.distill_on, args.mask_truncated_completions, distill)

        # 5. micro-batches, with the normalisers of each optimizer step over all processes
        need_teacher = distill and args.distill_divergence != "imitation"
        groups = source_index(problems, self.strategy_sources)
        micro = split_micro_batches(gen, plan, sel, advantages, S, with_teacher=need_teacher, problem_groups=groups,
                                    off_policy=off_policy)  # fmt: skip
        counts = local_counts(plan, sel, S).view(S // GA, GA, 3).sum(1).to(self.accelerator.device)
        counts = self.accelerator.reduce(counts, reduction="sum").cpu()
        set_step_normalisers(micro, counts, args.max_completion_length, GA * self.accelerator.num_processes)
        micro = [mb.to(self.accelerator.device) for mb in micro]

        # 6. no-grad passes
        self._no_grad_passes(micro)

        log_rollout(metrics, plan, rewards, stats, weights, sel, r.lengths, r.truncated, self.strategy_sources,
                    args.num_guided_generations, groups, off_policy)  # fmt: skip
        if off_policy is not None:
            metrics.add("reward/strong_response", rewards[off_policy].sum().item(), int(off_policy.sum()))
        metrics.add("time/generate_and_score_s", time.perf_counter() - t0, 1)
        return micro

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """TRL's evaluation of a policy: rollouts of the eval problems (autonomous and guided, sampled as
        in training), their rewards, accuracies and lengths, logged and returned as `eval_*` (no loss).
        Each process samples an equal share (a remainder of fewer problems than processes is left out)."""
        data = (
            self.eval_dataset
            if eval_dataset is None
            else training_problems(eval_dataset, self.processing_class, self.args, what="eval_dataset")[0]
        )
        if data is None:
            raise ValueError("evaluate() needs an eval_dataset (SGPOTrainer(eval_dataset=...) or evaluate(eval_dataset))")
        n_proc, rank = self.accelerator.num_processes, self.accelerator.process_index
        share = len(data) // n_proc
        rows = data.select(range(rank * share, (rank + 1) * share)).to_list()
        window = MetricWindow(metric_keys([], self.rewards.names))
        step = self.args.per_device_eval_batch_size
        self.model.eval()
        for start in range(0, len(rows), step):
            r = self._rollout(rows[start : start + step], window)
            weights = problem_weights(r.stats, self.args.instance_weighting)
            sel = select(r.gen, r.truncated, r.plan, r.stats.correct, weights, self.args.distill_on, True, True)
            log_rollout(
                window, r.plan, r.rewards, r.stats, weights, sel, r.lengths, r.truncated, [], self.args.num_guided_generations
            )
        logs = {f"{metric_key_prefix}_{k}": v for k, v in window.reduce(self.accelerator, self.state.global_step).items()}
        Trainer.log(self, logs)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logs)
        return logs

    def _no_grad_passes(self, micro: list[MicroBatch]) -> None:
        """Phase "no-grad passes": old, reference and teacher quantities of every micro-batch.

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
        for mb in micro:
            x, na = mb.loss, mb.n_auto
            if reuse or correct_sampler:
                # one pass for the old log-probs of the autonomous rows and, when the proximal mask
                # needs them, of the distilled rows (both under the autonomous prompt)
                both = mb.student.num_rows > na and args.distill_proximal
                rows = mb.student if both else mb.student.rows(slice(0, na))
                mask = torch.cat([x.auto_mask, x.distill_mask]) if both else x.auto_mask
                with self.metrics.timed("time/old_logps_s"):
                    old = self._score_logps(self.model, rows, mask)
                x.old_logps = old[:na]
                if both:
                    x.distill_old_logps = old[na:]
            if correct_sampler and mb.sampler_logps is not None:  # π_old / π_sampler weights (TRL's modes) and their figures
                a = self.args
                st = sampler_weights(
                    mb, a.vllm_importance_sampling_mode, a.vllm_importance_sampling_clip_max, a.vllm_importance_sampling_clip_min
                )
                log_sampler_correction(self.metrics, st)
            if args.beta > 0:
                with self.metrics.timed("time/reference_s"), self._reference() as ref:
                    x.ref_logps = self._score_logps(ref, mb.student.rows(slice(0, na)), x.auto_mask)
            if mb.teacher is not None:
                with self.metrics.timed("time/teacher_s"):
                    x.teacher_hidden = no_grad_hidden(self.model, mb.teacher, args.forward_micro_batch_size)
                x.teacher_weight, x.teacher_bias = t_w, t_b

    def _score_logps(self, model, rows: Packed, mask: torch.Tensor) -> torch.Tensor:
        return score_logps(model, rows, mask, head=self.loss_config.head, temperature=self.args.temperature, chunk_size=self.args.head_chunk_size,
                           micro_batch_size=self.args.forward_micro_batch_size, lm_head=lambda: self._full_lm_head(model))  # fmt: skip

    def _full_lm_head(self, model, with_grad: bool = False):
        """Context: the whole LM head (weight, bias) of `model` under any engine (`sgpo.sharding`)."""
        return full_lm_head(self.accelerator.unwrap_model(model), with_grad=with_grad)

    # ------------------------------------------------------------------------------------ loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        # generation happens in _prepare_inputs (inside super().training_step): time it separately
        t0 = time.perf_counter()
        gen_before = self.metrics.total("time/generate_and_score_s")
        # what compute_loss gathers for the loss (the LM head under ZeRO-3) stays gathered through the backward
        with ExitStack() as self._step_stack:
            loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_stack = None
        gen_time = self.metrics.total("time/generate_and_score_s") - gen_before
        self.metrics.add("time/train_step_s", time.perf_counter() - t0 - gen_time, 0)
        return loss

    def compute_loss(self, model, inputs: MicroBatch, return_outputs=False, num_items_in_batch=None):
        """The micro-step's loss. Its sequences go through forward + backward in groups when
        `backward_group_size` / `backward_group_tokens` ask for it (`sgpo.phases.backward_groups`):
        every group but the last is back-propagated here, the last by the Trainer, so the gradients
        add up to the whole micro-batch's. The returned value is the whole micro-batch's loss."""
        if return_outputs:
            raise ValueError("SGPOTrainer does not return outputs")
        args = self.args
        groups = backward_groups(inputs.student, args.backward_group_size, args.backward_group_tokens)
        done = 0.0
        for rows in groups[:-1]:
            with early_group(self.accelerator, model) as backward, ExitStack() as head:
                loss = self._group_loss(model, inputs.group(rows), head)
                backward(loss)
            done = done + loss.detach()
        last = inputs if len(groups) == 1 else inputs.group(groups[-1])
        # the whole LM head, entered after the forward and held through the Trainer's backward (sgpo.sharding)
        stack = self._step_stack if self._step_stack is not None else ExitStack()
        return self._group_loss(model, last, stack) + done

    def _group_loss(self, model, mb: MicroBatch, stack: ExitStack) -> torch.Tensor:
        """One student forward (autonomous and distilled rows together, without the strategy) and
        `sgpo_loss` of its rows; the LM head is entered into `stack`, which must outlive the backward."""
        na = mb.n_auto
        hidden = completion_hidden(model, mb.student)  # (Na + Nd, C, H)
        weight, bias = stack.enter_context(self._full_lm_head(model, with_grad=True))
        ids = mb.student.completion_ids
        loss_inputs = replace(
            mb.loss, head_weight=weight, head_bias=bias, auto_hidden=hidden[:na], auto_ids=ids[:na],
            distill_hidden=hidden[na:], distill_ids=ids[na:],
        )  # fmt: skip
        out = sgpo_loss(loss_inputs, self.loss_config)
        for key, (total, count) in out.metrics.items():
            self.metrics.add(key, total, count)
        if out.distill_kl_per_row is not None and mb.distill_groups is not None:
            tokens = mb.loss.distill_mask.sum(1).float()
            for k, name in enumerate(self.strategy_sources):
                rows = mb.distill_groups == k
                self.metrics.add(f"distill/kl/{name}", out.distill_kl_per_row[rows].sum().item(), tokens[rows].sum().item())
        return out.loss * self.accelerator.num_processes  # DDP averages gradients over processes

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs or "train_loss" not in logs:  # not the end-of-training summary
            logs.update(self.metrics.reduce(self.accelerator, self.state.global_step))
            if self.completion_log is not None and self.accelerator.is_main_process:
                self.completion_log.print(self.state.global_step)
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
        data position) plus the instance-weight EMA and the rollout buffer, written whole into the
        staging folder and then renamed to `checkpoint-N` (`sgpo.checkpoints`): a run killed while
        saving leaves the previous checkpoints as they were, and every `checkpoint-N` is complete."""
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = staging_folder(run_dir, name, self.args.should_save)
        self.accelerator.wait_for_everyone()
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # rotated below, once renamed
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir, self.args.save_total_limit = None, limit
        folder = staging / name
        if self.args.should_save:
            write_state(folder, self._ema.state_dict())
        period = self.args.steps_per_generation * self.args.num_iterations
        if self._buffer is not None and self._step % period:
            # inside a generation period: the rest of the period trains on these rollouts (π_old,
            # the teacher and the samples are of the policy at the start of the period), so a resumed
            # run needs them, not a fresh sample from the current policy
            write_rollout_buffer(folder, self._buffer, self.accelerator.process_index)
        self.accelerator.wait_for_everyone()  # every process has written its part
        if self.args.should_save:
            publish_checkpoint(run_dir, name, limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        path = None
        if resume_from_checkpoint:
            path = resume_path(resume_from_checkpoint, self.args.output_dir)
            state = read_state(path)
            if state is not None:
                self._ema.load_state_dict(state["instance_weight_ema"])
            self._resume_buffer = read_rollout_buffer(path, self.accelerator.process_index, self.accelerator.device)
            resume_from_checkpoint = path
        self._prepare_output_dir(path)
        self._preemption.install()
        try:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self._preemption.uninstall()
            self._close_vllm()  # free the engine's memory for whatever runs next (a later train() starts a new one)
        step = self.state.global_step
        if self._preemption.received is not None and step < self.state.max_steps:
            checkpoint = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
            raise TrainingPreempted(self._preemption.received, str(checkpoint), step)
        return output

    def _prepare_output_dir(self, resume: str | None) -> None:
        """The output folder policy of `sgpo.checkpoints` (`previous_run`, `prepare_run_folder`) with
        the processes in step: every process checks the folder (so every process raises alike), the
        main one prepares it and logs the batch sizes."""
        out = Path(self.args.output_dir)
        previous = previous_run(out, self.args.overwrite_output_dir) if resume is None else []
        self.accelerator.wait_for_everyone()
        if self.is_world_process_zero():
            # config.yaml reruns the run: it names the model and the data, and does not resume
            prepare_run_folder(out, previous, resume, {**self.run_sources, **self.args.to_dict(), "resume_from_checkpoint": None})
            logger.info("%s", self.batch_summary())
        self.accelerator.wait_for_everyone()

    def batch_summary(self) -> str:
        """Problems and completions per optimizer step, per process and over all processes, and the
        number of optimizer steps the run will take (`sgpo.planning.batch_plan`)."""
        plan = batch_plan(self.args, self.accelerator.num_processes, len(self.train_dataset))
        return plan.describe(self.args.num_generations, self.args.num_guided_generations)
