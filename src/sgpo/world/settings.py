"""The settings of a strategy-world run: everything that determines its numbers.

`WorldRunConfig` (world, model, warm-up, training budget, evaluation, threads) is what `sgpo demo`
runs (`make_config`: the full setting or the quick one) and what `sgpo experiment` builds its setup
from (`experiment_base`: every key of an experiment YAML replaces one of it); `TrainSettings` is one
GRPO / SGPO / LUFFY run from the warm-up (`sgpo_config_kwargs`).
A run folder keeps its configuration in `RUN_CONFIG_FILE`; a rerun must match it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sgpo.world.generate import WorldSpec
from sgpo.world.model import ModelSpec
from sgpo.world.warmup import WarmupConfig

RUN_CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class TrainSettings:
    """One GRPO or SGPO run from the warm-up checkpoint. Both methods get the same settings except
    the rollout split and the distillation term, so they see the same problems, the same number of
    rollouts per problem and the same number of optimizer steps."""

    max_steps: int = 60
    problems_per_step: int = 8
    rollouts_per_problem: int = 8  # GRPO: 8 autonomous; SGPO: 4 autonomous + 4 guided
    max_completion_length: int = 64
    # Shared by both methods, chosen on GRPO alone: of 2e-4 / 5e-5 / 1e-5 (60 steps), 1e-5 gives GRPO
    # its best held-out autonomous accuracy while keeping the warm-up's guided skill (2e-4 halves it).
    # The learning rates SGPO and the baselines are tuned on: docs/results.md.
    learning_rate: float = 1e-5
    temperature: float = 1.0
    # optimizer steps on each generation batch (TRL's num_iterations): with 2 or more, the policy moves
    # away from the one that sampled the batch, so the clipping and the proximal mask can bind
    num_iterations: int = 1
    loss_type: str = "dapo"
    distill_coef: float = 1.0
    instance_weighting: str = "marginal"
    seed: int = 0

    def sgpo_config_kwargs(self, method: str) -> dict[str, Any]:
        """`SGPOConfig` fields of a run of `method`: "grpo", "sgpo", or "luffy" (mixed-policy GRPO:
        all rollouts autonomous, one slot per group holding the strong response; its own loss
        aggregation, dr_grpo: docs/algorithm.md, "Baselines and ablations")."""
        half = self.rollouts_per_problem // 2
        extra: dict[str, Any] = {}
        if method in ("grpo", "luffy"):
            rollout = dict(num_generations=self.rollouts_per_problem, num_guided_generations=0, distill_coef=0.0)
            if method == "luffy":
                extra = dict(
                    mix_strong_responses=True, strong_response_column="response", policy_shaping_gamma=0.1, loss_type="dr_grpo"
                )
        elif method == "sgpo":
            rollout = dict(
                num_generations=half, num_guided_generations=self.rollouts_per_problem - half, distill_coef=self.distill_coef
            )
        else:
            raise ValueError(f"unknown method {method!r} (grpo, sgpo, luffy)")
        return (
            dict(
                per_device_train_batch_size=self.problems_per_step,
                max_steps=self.max_steps,
                max_completion_length=self.max_completion_length,
                learning_rate=self.learning_rate,
                lr_scheduler_type="constant",
                warmup_steps=0,
                temperature=self.temperature,
                num_iterations=self.num_iterations,
                loss_type=self.loss_type,
                instance_weighting=self.instance_weighting,
                seed=self.seed,
                data_seed=self.seed,
                **rollout,
            )
            | extra
        )


@dataclass(frozen=True)
class WorldRunConfig:
    """Everything that determines the numbers of a run."""

    seed: int = 0
    quick: bool = False
    world: WorldSpec = field(default_factory=WorldSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    tokenizer_vocab_size: int = 640
    tokenizer_corpus_per_family: int = 100  # warm-up records per family the tokenizer is trained on
    eval_max_new_tokens: int = 64
    eval_batch_size: int = 128
    # the primary held-out metric: pass@1 averaged over `eval_samples` samples per problem at
    # `eval_temperature` (1: one greedy completion per problem, at temperature 0); greedy is kept beside
    eval_samples: int = 1
    eval_temperature: float = 0.0
    # guided accuracy (a reference, not the endpoint) of the trained runs: this many samples per problem
    # at `eval_temperature`, or one greedy completion (1, the default): it costs a second evaluation
    eval_guided_samples: int = 1
    # torch threads of every process; fixed rather than the machine's core count, because the
    # summation order in matrix products, and so the last bits of every number, depend on it
    threads: int = 1
    warmup_processes: int = 2  # the warm-up runs data-parallel in this many processes (warmup.py)

    def metric(self) -> str:
        """How held-out accuracy is measured, in words (results.json's `metric`)."""
        if self.eval_samples == 1:
            return "greedy"
        guided = "greedy" if self.eval_guided_samples == 1 else f"pass@1 over {self.eval_guided_samples} samples"
        return f"autonomous: pass@1 over {self.eval_samples} samples at T = {self.eval_temperature:g}; guided: {guided}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["world"] = self.world.to_dict()
        d["warmup"] = self.warmup.to_dict()
        return d


DEMO_EXPOSURE = {"sum": 0.6, "sum_even": 0.45, "sum_odd": 0.35, "sum_big": 0.25, "sum_small": 0.2, "sum_alt": 0.15}


def experiment_base(seed: int = 0, quick: bool = False) -> WorldRunConfig:
    """What an experiment YAML's keys replace (`sgpo.world.experiment.load_config`; `setting: full` or
    `quick`): world v2's demo setting, kept as it was when the experiments were written, so that a
    YAML file that leaves a key out keeps its numbers and its hash."""
    sampled = dict(eval_samples=4, eval_temperature=1.0, eval_guided_samples=1, eval_max_new_tokens=80)
    if not quick:
        return WorldRunConfig(
            seed=seed,
            world=WorldSpec(per_family={"heldout": 50, "train": 64, "warmup": 1000}),
            warmup=WarmupConfig(
                seed=seed, steps=900, guided_fraction=0.85, swap_fraction=1.0, auto_exposure=DEMO_EXPOSURE, auto_from_step=650
            ),  # fmt: skip
            train=TrainSettings(seed=seed, max_steps=40, num_iterations=2, learning_rate=3e-5, max_completion_length=80),
            **sampled,
        )
    return WorldRunConfig(
        seed=seed,
        quick=True,
        world=WorldSpec(per_family={"heldout": 20, "train": 16, "warmup": 300}),
        model=ModelSpec(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
        warmup=WarmupConfig(
            seed=seed,
            steps=300,
            batch_size=16,
            learning_rate=4e-3,
            warmup_steps=25,
            save_every=100,
            guided_fraction=0.85,
            swap_fraction=1.0,
            auto_exposure=DEMO_EXPOSURE,
            auto_from_step=200,
        ),  # fmt: skip
        train=TrainSettings(max_steps=6, problems_per_step=4, seed=seed, num_iterations=2, max_completion_length=80),
        eval_batch_size=120,
        **sampled,
    )


# the demo's world: the gated worlds' (v2.5-v2.8: experiments/world_v2_8.yaml's `world` and `warmup`)
DEMO_WORLD = dict(families="v2.4", list_length=(5, 8), warmup_length=(5, 10))
DEMO_WARMUP = dict(
    guided_fraction=0.85, swap_fraction=1.0, auto_exposure={}, wording_exposure=(0.6, 0.3, 0.1), auto_max_numbers=8
)


def make_config(seed: int = 0, quick: bool = False) -> WorldRunConfig:
    """The demo's setting (docs/strategy-world.md, "The demo on world v2.5"), or the quick one (a smaller world and
    model, fewer steps: a smoke test). The full setting is the base size of experiments/world_v2_8.yaml
    (its world, model, warm-up mix, RL batch and evaluation), shortened to fit `make demo` in minutes on
    2 cores: 900 warm-up steps (autonomous examples from step 700; the experiment: 1500 and 1300) and
    300 held-out problems (the experiment: 600); the runs are the experiment's (80 optimizer steps,
    3e-5: the rate its tuning chose for GRPO, docs/results.md "World v2.8"; SGPO is given the same)."""
    base = experiment_base(seed, quick)
    demo = replace(base, world=replace(base.world, **DEMO_WORLD), warmup=replace(base.warmup, **DEMO_WARMUP))
    if quick:
        return demo
    return replace(demo, warmup=replace(demo.warmup, auto_from_step=700), train=replace(demo.train, max_steps=80))
