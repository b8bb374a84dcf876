"""What a run will do, worked out from its settings alone (no model, no weights): the batch sizes of an
optimizer step and a rough memory estimate per process by engine. `SGPOTrainer.batch_summary` and
`sgpo train --dry-run` (`sgpo.dry_run`) print them; docs/scaling.md explains the figures."""

from __future__ import annotations

import math
from dataclasses import dataclass

ENGINES = ("ddp", "zero2", "zero3", "fsdp2")
ENGINE_HELP = {
    "ddp": "DDP / one process: everything whole on every process",
    "zero2": "DeepSpeed ZeRO-2: gradients and optimizer states sharded",
    "zero3": "DeepSpeed ZeRO-3: parameters, gradients and optimizer states sharded",
    "fsdp2": "FSDP2: parameters, gradients and optimizer states sharded",
}
GiB = 1024**3


@dataclass(frozen=True)
class BatchPlan:
    """Problems and completions per optimizer step; `total_steps` is None when the data set size is unknown."""

    num_processes: int
    problems_per_step: int  # per process
    completions_per_problem: int  # autonomous + guided (at most: problems without a strategy get no guided ones)
    steps_per_generation_batch: int  # optimizer steps one generation batch serves
    total_steps: int | None

    @property
    def completions_per_step(self) -> int:  # per process, at most
        return self.problems_per_step * self.completions_per_problem

    def describe(self, num_generations: int, num_guided_generations: int) -> str:
        n = self.num_processes
        total = "" if self.total_steps is None else f"; {self.total_steps} optimizer steps"
        return (
            f"effective batch: {self.problems_per_step} problems per optimizer step per process ({self.problems_per_step * n} "
            f"over {n} process{'es' if n > 1 else ''}), each with {num_generations} autonomous + {num_guided_generations} "
            f"guided completions (at most {self.completions_per_step} completions per process, "
            f"{self.completions_per_step * n} in all); one generation batch serves {self.steps_per_generation_batch} "
            f"optimizer step(s){total}"
        )


def batch_plan(args, num_processes: int, num_problems: int | None = None) -> BatchPlan:
    """The batch sizes of an `SGPOConfig` run on `num_processes` processes over `num_problems` problems."""
    a = args
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps
    steps_per_batch = a.steps_per_generation // a.gradient_accumulation_steps * a.num_iterations
    if a.max_steps > 0:
        total: int | None = a.max_steps
    elif num_problems is None:
        total = None
    else:
        batches = num_problems // (a.per_device_train_batch_size * a.steps_per_generation * num_processes)
        total = math.ceil(a.num_train_epochs * batches * steps_per_batch)
    return BatchPlan(num_processes, per_step, a.num_generations + a.num_guided_generations, steps_per_batch, total)


# ---------------------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts of a model, from its config (built on the meta device: no weights)."""

    parameters: int
    trainable: int  # all of them, or the LoRA adapter's
    vocab_size: int
    hidden_size: int
    dtype_bytes: int  # of the weights as loaded (bf16 / fp16: 2, fp32: 4)


def model_size(config, dtype_bytes: int, lora_args=None) -> ModelSize:
    """Count the parameters of `config`'s causal LM (and of a LoRA adapter built from `lora_args`, an
    object with TRL's lora_* fields, when `lora_args.use_peft`) without allocating any weight."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        total = sum(p.numel() for p in model.parameters())
        trainable = total
        if lora_args is not None and getattr(lora_args, "use_peft", False):
            from peft import get_peft_model
            from trl.trainer.utils import get_peft_config

            peft_model = get_peft_model(model, get_peft_config(lora_args))
            trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
            total += trainable
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelSize(total, trainable, int(text.vocab_size), int(text.hidden_size), dtype_bytes)


def memory_estimate(
    size: ModelSize, engine: str, num_processes: int, *, reference_model: bool, teacher_head_snapshot: bool
) -> dict[str, float]:
    """Rough bytes per process of the training state (GiB): weights, gradients and AdamW states
    (two float32 moments, plus a float32 master copy of half-precision weights under DeepSpeed), a
    frozen reference model (beta > 0 without LoRA) and the teacher's LM-head snapshot. Activations
    and the rollout engine are not included (the chunked LM head never holds tokens × vocabulary
    logits; vLLM colocate takes `vllm_gpu_memory_utilization` of the GPU)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    n = max(1, num_processes)
    shard_params = n if engine in ("zero3", "fsdp2") else 1
    shard_grads = n if engine in ("zero2", "zero3", "fsdp2") else 1
    master = 4 if engine.startswith("zero") and size.dtype_bytes < 4 else 0
    weights = size.parameters * size.dtype_bytes / shard_params
    grads = size.trainable * size.dtype_bytes / shard_grads
    optimizer = size.trainable * (8 + master) / shard_grads
    reference = size.parameters * size.dtype_bytes / shard_params if reference_model else 0.0
    head = size.vocab_size * size.hidden_size * size.dtype_bytes if teacher_head_snapshot else 0.0
    parts = {"weights": weights, "gradients": grads, "optimizer": optimizer, "reference_model": reference, "teacher_head": head}
    out = {k: v / GiB for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out
