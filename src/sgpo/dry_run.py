"""`sgpo train --config RECIPE --dry-run`: check a recipe without loading any weight.

In order: the config (already parsed and validated by `SGPOConfig`), what the real run checks before it
loads weights (`run_checks`: the model and tokenizer can be found, the reward functions load and fit
`reward_weights` and `correctness_reward`, the logging integrations of `report_to` are installed), the
data (schema of every row,
a sample), the prompt templates (rendered on the sample), the prompt lengths against
`max_prompt_length` (every autonomous and guided prompt, with the tokenizer when it is available
locally; skipped with a note otherwise), the batch sizes per optimizer step (`sgpo.planning`), and a
rough memory estimate per process by engine from the model config's sizes (the model is built on
the meta device; skipped when the config is not available locally). Prints a report and returns the
exit status: 0 when nothing is wrong, 1 otherwise (each issue on one line; "problem" is a training row here).
"""

from __future__ import annotations

import os
from pathlib import Path

from sgpo.data import (
    PROMPT_GIVEN,
    ColumnMap,
    DataError,
    count_missing_strategies,
    data_prompt_format,
    is_conversation,
    load_problems,
)
from sgpo.modeling import adapter_base, is_adapter_folder, load_tokenizer, model_source_error
from sgpo.planning import ENGINE_HELP, ENGINES, batch_plan, memory_estimate, model_size
from sgpo.rewards import RewardFunctions, RewardSpecError

SAMPLE_ROWS = 2


def _engine_from_environment() -> str | None:
    """The engine `accelerate launch` set up, when the dry run runs under it."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "zero3" if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" else "zero2"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp2"
    return None


def _short(text: str, n: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _local(name: str) -> bool:
    """The model / tokenizer `name` can be read without the network (a folder, or the HF cache)."""

    if Path(name).expanduser().exists():
        return model_source_error(name) is None
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid id either: not local
        return False


def integration_problems(report_to) -> list[str]:
    """The logging integrations of `report_to` that are not installed, each as one line."""
    from transformers.integrations import get_available_reporting_integrations

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    available = set(get_available_reporting_integrations())
    return [
        f"report_to {name}: the {name} package is not installed (pip install {name}), or pass --report_to none"
        for name in names
        if name not in ("none", "all") and name not in available
    ]


def run_checks(script_args, config) -> list[str]:
    """What the real run checks before it loads any weight, each issue as one line: the model (and
    tokenizer) can be found, the reward functions load and fit `reward_weights` and
    `correctness_reward`, the logging integrations of `report_to` are installed."""
    issues = []
    for name in (script_args.model_name_or_path, script_args.tokenizer_name_or_path):
        if name is not None and (problem := model_source_error(str(name))) is not None:
            issues.append(problem)  # it names the model
    try:
        RewardFunctions(list(config.reward_funcs), config.reward_weights, config.correctness_reward)
    except RewardSpecError as exc:
        issues.append(f"rewards: {exc}")
    return issues + integration_problems(config.report_to)


def dry_run(script_args, config, num_processes: int | None = None, engine: str | None = None, out=print) -> int:
    problems: list[str] = run_checks(script_args, config)
    n_proc = num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    out(
        f"config: ok ({'GRPO' if config.is_grpo else 'SGPO'}; loss_type {config.loss_type}, "
        f"distill_coef {config.distill_coef}, {'LoRA r=' + str(config.lora_r) if config.use_peft else 'full fine-tuning'}, "
        f"{'vLLM ' + config.vllm_mode if config.use_vllm else 'HF generate'}; output_dir {config.output_dir})"
    )

    # -- data
    dataset = None
    try:
        columns = ColumnMap(config.problem_column, config.answer_column, config.strategy_column, config.id_column)
        dataset = load_problems(
            script_args.dataset_name,
            columns=columns,
            split=script_args.dataset_split,
            require_strategy=config.require_strategy,
            trl_formats=True,
        )
    except (DataError, FileNotFoundError, ValueError) as exc:
        problems.append(f"data: {exc}")
    if dataset is not None:
        missing = count_missing_strategies(dataset)
        out(
            f"data: {script_args.dataset_name}: {len(dataset)} problems, {len(dataset) - missing} with a strategy; "
            f"columns {', '.join(dataset.column_names)}"
        )
        if not config.is_grpo and missing == len(dataset):
            problems.append(f"data: {script_args.dataset_name}: no problem has a strategy, so nothing would be distilled")
        for row in dataset.select(range(min(SAMPLE_ROWS, len(dataset)))):
            out(
                f"  row {row['id']!r}: problem {_short(row['problem'])!r} answer {_short(row['answer'], 40)!r} "
                f"strategy {_short(row['strategy']) if row['strategy'] else None!r}"
            )

    # -- templates and prompt lengths
    fmt = None
    try:
        fmt = data_prompt_format(config, dataset)
    except ValueError as exc:
        problems.append(f"templates: {exc}")
    tok_name = script_args.tokenizer_name_or_path or script_args.model_name_or_path
    tokenizer = None
    if tok_name and _local(tok_name):
        tokenizer = load_tokenizer(tok_name)
    if fmt is not None and dataset is not None:
        _check_prompts(dataset, fmt, tokenizer, tok_name, config, problems, out)

    # -- batch sizes
    plan = batch_plan(config, n_proc, len(dataset) if dataset is not None else None)
    out(
        f"batch ({n_proc} process{'es' if n_proc > 1 else ''}): {plan.describe(config.num_generations, config.num_guided_generations)}"
    )
    if dataset is not None:
        per_generation = config.per_device_train_batch_size * config.steps_per_generation * n_proc
        if len(dataset) < per_generation:
            problems.append(f"batch: one generation batch needs {per_generation} problems; the data set has {len(dataset)}")

    # -- memory
    _memory(script_args, config, n_proc, engine or _engine_from_environment(), out)
    for p in problems:
        out(f"issue: {p}")
    out(f"dry run: {'ok' if not problems else f'{len(problems)} issue(s)'} (no weights were loaded)")
    return 1 if problems else 0


def _check_prompts(dataset, fmt, tokenizer, tok_name, config, problems: list[str], out) -> None:
    """Render every prompt (autonomous, and guided where there is a strategy) and, with a tokenizer,
    measure them against max_prompt_length."""
    from types import SimpleNamespace

    renderer = tokenizer or SimpleNamespace(chat_template=None)  # without a tokenizer: the plain template
    given = dataset[PROMPT_GIVEN] if PROMPT_GIVEN in dataset.column_names and tokenizer is not None else None
    chats = [g if is_conversation(g) else None for g in given] if given is not None else [None] * len(dataset)
    try:
        autonomous = [fmt.render(renderer, p, conversation=c) for p, c in zip(dataset["problem"], chats)]
        guided = [
            fmt.render(renderer, p, s, conversation=c)
            for p, s, c in zip(dataset["problem"], dataset["strategy"], chats)
            if s is not None
        ]
    except ValueError as exc:  # a conversation without a chat template
        problems.append(f"prompts: {exc}")
        return
    out(f"templates: ok; the first prompt as the model sees it{'' if tokenizer else ' (no tokenizer: plain template)'}:")
    out("  " + _short(guided[0] if guided else autonomous[0], 300))
    if tokenizer is None:
        out(f"prompt lengths: skipped (the tokenizer {tok_name!r} is not available locally)")
        return
    special = not fmt.applies_chat_template(tokenizer)
    limit = config.max_prompt_length
    for what, texts in (("autonomous", autonomous), ("guided", guided)):
        if not texts:
            continue
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
        over = sum(n > limit for n in lengths) if limit is not None else 0
        out(
            f"prompt lengths ({what}, {len(lengths)}): max {max(lengths)}, mean {sum(lengths) / len(lengths):.0f} tokens "
            f"(max_prompt_length {limit}){'' if not over else f': {over} over the limit'}"
        )
        if over:
            problems.append(f"prompts: {over} {what} prompt(s) exceed max_prompt_length={limit} (longest {max(lengths)} tokens)")


def _memory(script_args, config, n_proc: int, engine: str | None, out) -> None:
    name = script_args.model_name_or_path
    if not name or not _local(name):
        out(f"memory: skipped (the model config of {name!r} is not available locally)")
        return
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(adapter_base(name) if is_adapter_folder(name) else name)
    dtype = str((config.model_init_kwargs or {}).get("dtype") or getattr(model_config, "dtype", None) or "float32")
    dtype_bytes = 2 if any(k in dtype for k in ("bfloat16", "float16")) else 4
    size = model_size(model_config, dtype_bytes, config)
    reuse = config.steps_per_generation > config.gradient_accumulation_steps or config.num_iterations > 1
    kwargs = dict(
        reference_model=config.beta > 0 and not config.use_peft, teacher_head_snapshot=reuse and config.distill_coef > 0
    )
    out(
        f"memory (rough, GiB per process; weights {dtype.removeprefix('torch.')}, AdamW; activations and the rollout "
        f"engine not included): {model_config.model_type}, {size.parameters / 1e9:.2f} B parameters, "
        f"{size.trainable / 1e9:.3f} B trained"
    )
    for e in [engine] if engine else ENGINES:
        m = memory_estimate(size, e, n_proc, **kwargs)
        out(
            f"  {e:6s} weights {m['weights']:.1f} + gradients {m['gradients']:.1f} + optimizer {m['optimizer']:.1f} "
            f"+ reference {m['reference_model']:.1f} + teacher head {m['teacher_head']:.2f} = {m['total']:.1f}  ({ENGINE_HELP[e]})"
        )
    if config.use_vllm and config.vllm_mode == "colocate":
        out(f"  + the colocated vLLM engine: vllm_gpu_memory_utilization {config.vllm_gpu_memory_utilization} of each GPU")
