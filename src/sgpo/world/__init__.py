"""The strategy world: a procedurally generated task on which SGPO runs end to end without downloads.

Three layers, each importing only the ones below it (an import contract in pyproject.toml):

The toy task
- `families`  — the problem families (list procedures) and the oracle that writes worked solutions
- `generate`  — records of the `heldout`, `train`, `warmup` and `validation` splits from a seed
- `extractor` — `WorldExtractor`, the rule-based `Extractor` that turns solutions into strategies
- `prompt`    — the world's `PromptFormat` (short templates, `\\boxed{}` answers)
- `tokenizer`, `model` — a tokenizer and a tiny Qwen2 model built locally, saved by path
- `warmup`    — the supervised warm-up into the guided >> autonomous regime
- `evaluate`  — held-out accuracy, autonomous and guided, per family

The demo driver (`sgpo demo`)
- `settings`  — `WorldRunConfig`, `TrainSettings`: everything that determines a run's numbers
- `pipeline`  — every stage of `sgpo demo`, each written once: world → extract → tokenizer + model →
                warm-up → evaluation → GRPO and SGPO side by side → their evaluation
                (`python -m sgpo.commands.world --out DIR [--quick]` stops after the warm-up's evaluation)
- `workers`   — determinism (fixed threads) and stages side by side in worker processes
- `results`   — the demo's table, results.json, per_family.json and plots
- `progress`  — progress bars on a terminal, progress lines elsewhere

The experiment harness (`sgpo experiment`)
- `methods`   — the compared methods (baselines, ablations) and where each run lives
- `train_data` — the own / half / half + retrieved training-data variants
- `experiment`, `experiment_results` — tuning, seeds, bootstrap intervals, plots

See docs/strategy-world.md. Importing this package does not import torch.
"""

from sgpo.world.extractor import WorldExtractor, fill_strategies
from sgpo.world.families import FAMILIES, Family, get_family
from sgpo.world.generate import SPLITS, WorldSpec, build_world, read_world, write_world
from sgpo.world.prompt import WORLD_PROMPT_FORMAT

__all__ = [
    "FAMILIES",
    "SPLITS",
    "WORLD_PROMPT_FORMAT",
    "Family",
    "WorldExtractor",
    "WorldSpec",
    "build_world",
    "fill_strategies",
    "get_family",
    "read_world",
    "write_world",
]
