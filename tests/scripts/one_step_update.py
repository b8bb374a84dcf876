"""SGPO with fixed rollouts, run directly (one process) or with `accelerate launch` (2 gloo processes,
DDP, FSDP2 or DeepSpeed ZeRO-2/3): every loss normaliser and the instance-weight EMA are global, so
both runs must agree.

usage: one_step_update.py OUT_FILE PER_DEVICE_BATCH_SIZE LOSS_TYPE [SCENARIO] [BACKWARD_GROUP_SIZE]

BACKWARD_GROUP_SIZE (default 0: all of a micro-batch's sequences at once) runs the loss step's sequences
through forward + backward in groups of that many (`backward_group_size`): the update must not change.

Scenarios:
  plain    one SGD step; the main process saves the parameter update (= lr·grad) to OUT_FILE
  masked   the same, but every completion of problems add-0 and add-1 is truncated (no EOS) and
           mask_truncated_completions is on: with 2 processes the first one's micro-batch has nothing
           to train on, and the update must still equal the 1-process one (no crash, no hang)
  ema      four steps with a shuffled order and instance_weight_ema = 0.5, checkpoints every 2 steps,
           then a second trainer resumes from checkpoint-2 and trains to step 4; every process saves
           its EMA state after each run to OUT_FILE.straight.rank{R}.json / OUT_FILE.resumed.rank{R}.json
  sharded  two SGD steps on one generation batch (num_iterations 2: old log-probs and the
           teacher's LM-head snapshot are taken) with a reference model (beta > 0); the main process
           saves the whole update, gathered from FSDP2 / ZeRO-3 shards (tests/test_sharded.py)
  reuse    the same without the reference model (beta 0)
  accumulate  two SGD steps of two micro-steps each (gradient_accumulation_steps 2): the engines'
           accumulation boundaries (DeepSpeed's included) fall where the Trainer's do
  reuse_root  (FSDP2 only) "reuse" with the model sharded here before the trainer sees it: each layer,
           then the root with reshard_after_forward=True, so that the LM head is sharded again after
           every forward and the trainer must unshard it for the loss (`sgpo.sharding.full_lm_head`)

Under `accelerate launch --config_file configs/accelerate/{fsdp2,zero2,zero3}.yaml` the engine comes
from accelerate's environment. accelerate turns FSDP on only for accelerator devices, although
FSDP2 itself runs on CPU with gloo: on a machine without one, `allow_fsdp_on_cpu` lifts that gate
(the one thing replaced here for want of a GPU). DeepSpeed runs on its CPU accelerator
(DS_ACCELERATOR=cpu) with the gloo backend.
"""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (conftest helpers)

from sgpo.config import SGPOConfig  # noqa: E402
from sgpo.rollout import Generation, pad  # noqa: E402
from sgpo.sharding import sharding_of, to_full  # noqa: E402
from sgpo.testing import build_tiny_model, build_tiny_tokenizer, tiny_arithmetic_rows  # noqa: E402

from conftest import FixedRolloutTrainer, even_answer_reward  # noqa: E402

TRUNCATED_IDS = ("add-0", "add-1")
DEEPSPEED = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
FSDP = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def allow_fsdp_on_cpu() -> None:
    """accelerate enables FSDP for GPU-like devices only (a MULTI_CPU state ignores the FSDP plugin);
    make every MULTI_CPU state of this FSDP-launched process an FSDP one, with the plugin accelerate
    built from its environment. Everything else is accelerate's and torch's."""
    import accelerate.state as state
    from accelerate.utils import DistributedType

    init, plugins = state.AcceleratorState.__init__, []

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if kwargs.get("fsdp_plugin") is not None:
            plugins.append(kwargs["fsdp_plugin"])
        if plugins and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, plugins[0]

    state.AcceleratorState.__init__ = patched


if FSDP and not torch.cuda.is_available():
    allow_fsdp_on_cpu()


def full_parameters(trainer) -> dict[str, torch.Tensor]:
    """Every parameter whole (gathered from FSDP2 / ZeRO-3 shards; every process must call this)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    out = {}
    for name, p in model.named_parameters():
        if sharding_of(p) == "zero3":
            import deepspeed

            with deepspeed.zero.GatheredParameters([p]):
                out[name] = p.detach().clone()
        else:
            out[name] = to_full(p).detach().clone()
    return out


def id_reward(prompts, completions, id, guided, **_):
    """Problem add-i: the k-th autonomous completion is correct iff k < i mod 3, the k-th guided one iff
    k < 1 + i mod 2 — accuracies, and so instance weights, that differ from problem to problem."""
    from collections import Counter

    seen, out = Counter(), []
    for pid, g in zip(id, guided):
        i, k = int(pid.split("-")[1]), seen[(pid, g)]
        seen[(pid, g)] += 1
        out.append(float(k < (1 + i % 2 if g else i % 3)))
    return out


class TruncatingTrainer(FixedRolloutTrainer):
    """Completions of TRUNCATED_IDS lose their EOS (cut at max_completion_length, as generate would)."""

    def _generate(self, prompt_ids):
        gen = super()._generate(prompt_ids)
        owner = {}
        for row in self.train_dataset:
            owner[tuple(row["_prompt_ids"])] = owner[tuple(row["_guided_ids"])] = row["id"]
        tok = self.processing_class
        completions = []
        for p, ids, m in zip(prompt_ids, gen.completion_ids, gen.completion_mask):
            c = ids[m.bool()].tolist()
            completions.append(c[:-1] if owner[tuple(p)] in TRUNCATED_IDS else c)
        c_ids, c_mask = pad(completions, tok.pad_token_id, "right")
        return Generation(gen.prompt_ids, gen.prompt_mask, c_ids, c_mask, tok.batch_decode(completions, skip_special_tokens=True))


def config(out: str, per_device: int, loss_type: str, **kw) -> SGPOConfig:
    base = dict(
        output_dir=str(Path(out).parent / "run"),
        per_device_train_batch_size=per_device,
        num_generations=3,
        num_guided_generations=2,
        max_completion_length=10,
        loss_type=loss_type,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        weight_decay=0.0,
        max_steps=1,
        shuffle_dataset=False,
        distill_on="all",
        instance_weighting="constant",
        report_to="none",
        save_strategy="no",
        use_cpu=not DEEPSPEED,  # DeepSpeed's CPU accelerator: accelerate must not be told "cpu"
        **({"ddp_backend": "gloo"} if DEEPSPEED else {}),
    )
    base.update(kw)
    return SGPOConfig(**base)


def one_step(out: str, per_device: int, loss_type: str, scenario: str, group_size: int | None = None) -> None:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cls, extra = (TruncatingTrainer, dict(mask_truncated_completions=True)) if scenario == "masked" else (FixedRolloutTrainer, {})
    if scenario in ("sharded", "reuse", "reuse_root"):
        extra = dict(max_steps=2, num_iterations=2, beta=0.04 if scenario == "sharded" else 0.0)
    if scenario == "accumulate":
        extra = dict(max_steps=2, gradient_accumulation_steps=2)
    extra["backward_group_size"] = group_size
    if scenario == "reuse_root":
        from accelerate import PartialState
        from torch.distributed.fsdp import fully_shard

        PartialState(cpu=True)  # the process group, before fully_shard
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model, reshard_after_forward=True)  # accelerate keeps an FSDPModule as it is
    trainer = cls(
        model,
        args=config(out, per_device, loss_type, **extra),
        processing_class=tokenizer,
        reward_funcs=[even_answer_reward],
        train_dataset=tiny_arithmetic_rows(8),
    )
    trainer.train()
    after = full_parameters(trainer)
    if trainer.is_world_process_zero():
        torch.save({n: before[n] - after[n] for n in before}, out)
        print(f"processes={trainer.accelerator.num_processes} engine={trainer.accelerator.distributed_type}")


def ema_runs(out: str, per_device: int, loss_type: str) -> None:
    tokenizer = build_tiny_tokenizer()
    common = dict(
        max_steps=4,
        shuffle_dataset=True,
        instance_weighting="marginal",
        instance_weight_ema=0.5,
        save_strategy="steps",
        save_steps=2,
        learning_rate=0.1,
        seed=3,
    )
    for name in ("straight", "resumed"):
        args = config(out, per_device, loss_type, overwrite_output_dir=name == "straight", **common)
        trainer = FixedRolloutTrainer(
            build_tiny_model(tokenizer),
            args=args,
            processing_class=tokenizer,
            reward_funcs=[id_reward],
            train_dataset=tiny_arithmetic_rows(8),
        )
        trainer.train(resume_from_checkpoint=str(Path(args.output_dir) / "checkpoint-2") if name == "resumed" else None)
        rank = trainer.accelerator.process_index
        Path(f"{out}.{name}.rank{rank}.json").write_text(json.dumps(trainer._ema.values, sort_keys=True))
    if trainer.is_world_process_zero():
        print(f"processes={trainer.accelerator.num_processes}")


if __name__ == "__main__":
    scenario = sys.argv[4] if len(sys.argv) > 4 else "plain"
    if scenario == "ema":
        ema_runs(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    else:
        group_size = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        one_step(sys.argv[1], int(sys.argv[2]), sys.argv[3], scenario, group_size or None)
    # as `sgpo train` does: the trainers are gone (their DDP wrappers hold the group), then the group is
    # destroyed, which must join gloo's threads while the interpreter is whole (sgpo.process_group)
    import gc

    from sgpo.process_group import end_process_group

    gc.collect()
    left = end_process_group()
    print(f"gloo threads after the group ended: {left}")
