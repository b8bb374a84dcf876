"""The methods `sgpo experiment` compares, and where each run of one lives.

Each method is a configuration of the trainer (`Method`: a base, "sft", "grpo", "luffy" or "sgpo",
with `SGPOConfig` overrides on top) trained on a training-data variant (`sgpo.world.train_data`):
SFT on the oracle responses, GRPO, LUFFY, SGPO and four SGPO ablations (docs/algorithm.md,
"Baselines and ablations"), and SGPO on two variants where half the problems have no strong
response (docs/strategy-library.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.world.settings import TrainSettings

RUN_FILE = "run.json"  # a finished run's evaluations, in its run_dir


@dataclass(frozen=True)
class Method:
    """One method of the comparison: the trainer's `base` configuration ("sft", "grpo", "luffy",
    "sgpo": `TrainSettings.sgpo_config_kwargs`) with `overrides` of `SGPOConfig` fields on top,
    trained on the training-data variant `data` (`sgpo.world.train_data.VARIANTS`)."""

    name: str
    base: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    data: str = "own"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sft", "sft", label="SFT on the oracle responses"),
    Method("grpo", "grpo", label="GRPO"),
    Method("luffy", "luffy", label="LUFFY (mixed-policy GRPO)"),
    Method("sgpo", "sgpo", label="SGPO"),
    Method("sgpo_imitation", "sgpo", {"distill_divergence": "imitation"}, "SGPO, trajectory imitation instead of the KL"),
    Method("sgpo_reverse_kl", "sgpo", {"distill_divergence": "reverse_kl"}, "SGPO, reverse KL"),
    Method("sgpo_constant_weight", "sgpo", {"instance_weighting": "constant"}, "SGPO, constant instance weight"),
    Method("sgpo_no_proximal", "sgpo", {"distill_proximal": False}, "SGPO, no proximal mask"),
    # the control: every training problem's teacher prompt carries another family's strategy
    Method("sgpo_mismatched", "sgpo", label="SGPO given another family's strategy (control)", data="mismatched"),
    # the strategy library (docs/strategy-library.md): half the training problems without a strong response
    Method("sgpo_half", "sgpo", label="SGPO, own strategies for half, RL only for the other half", data="half"),
    Method("sgpo_half_retrieved", "sgpo", label="SGPO, own strategies for half, retrieved for the other half",
           data="half_retrieved"),
)}  # fmt: skip
DEFAULT_METHODS = tuple(m for m in METHODS if METHODS[m].data == "own")  # experiments/world_v1.yaml's
REFERENCE = "sgpo"  # by default, the bootstrap intervals are of this method minus each other one


def run_dir(out: Path, method: str, lr: float, seed: int, size: str = "base") -> Path:
    """Where a run lives: `runs/` for the base model size, `runs-<size>/` for another (`larger`)."""
    return out / ("runs" if size == "base" else f"runs-{size}") / method / f"lr={lr:g},seed={seed}"


def setup_dir(out: Path, size: str = "base") -> Path:
    """The shared world and warm-up of a model size: `setup/` (base), `setup-<size>/` (another)."""
    return out / ("setup" if size == "base" else f"setup-{size}")


def method_config_kwargs(method: str, settings: TrainSettings) -> dict[str, Any]:
    """`SGPOConfig` fields of an RL method's run under `settings`."""
    m = METHODS[method]
    return {**settings.sgpo_config_kwargs(m.base), **m.overrides}
