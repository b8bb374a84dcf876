"""`sgpo experiment`: SGPO against its baselines and ablations on the strategy world, under one protocol.

    sgpo experiment --config experiments/world_v1.yaml --out runs/experiment [--seeds N] [--quick]

Every method starts from the same warm-up checkpoint and trains on the same problems with the same
optimizer steps, problems per step and completions per problem (`TrainSettings`); only the method
differs (`sgpo.world.methods.METHODS`: SFT on the oracle responses, GRPO, LUFFY, SGPO and four SGPO
ablations, each a configuration of the trainer: docs/algorithm.md, "Baselines and ablations"; and
SGPO on two training-data variants where half the problems have no strong response,
`sgpo.world.train_data`: docs/strategy-library.md). The protocol:

1. the world (with a `validation` split apart from the `heldout` test split) and the warm-up, built
   once by the demo's pipeline (`sgpo.world.pipeline.run_pipeline`) in `setup/`: the warm-up is
   shared by every run; the training-data variants the methods need are written into
   `setup/world/train-data/` once;
2. tuning: every method is trained at every learning rate of the same grid with RL seeds 0 … T-1
   (`tuning_seeds`, 1 by default) and evaluated on the validation split only; its rate is the one
   with the best mean autonomous accuracy there (ties: the smaller rate);
3. seeds: the chosen rate's runs are evaluated in full, and every method is trained at its chosen
   rate with RL seeds T … N-1 too (seeds below T are tuning runs); these runs are evaluated on the held-out test
   split (autonomous and guided) and the generalisation splits — a rate that was not chosen never is,
   which keeps the test split out of every choice and saves most of the tuning runs' evaluation;
4. results (`sgpo.world.experiment_results`): mean ± std over seeds, paired bootstrap intervals of
   SGPO minus each other method (or of the config's `compare` pairs), per-family accuracy, learning curves, selectivity, instance weights.

Output folder:

    experiment.json                     the experiment's configuration (a rerun must match it)
    setup/                              the pipeline's folder: world/, tokenizer/, warmup/, eval/warmup.json
    runs/<method>/lr=<lr>,seed=<s>/     one run: the model, metrics.jsonl, run.json (its evaluations)
    selectivity.json, results.json, results.md, plots/*.png

A run trains into `<run>.tmp/` and is renamed into place with its `run.json` written, so a rerun after
an interruption skips every finished run and redoes only the unfinished ones.
The folder's small files (run.json and metrics.jsonl of each run, the gate; not the models) can be
kept elsewhere and restored into a new folder, where the experiment goes on from them
(`sgpo.world.experiment_records`, `--sync-records`).

Runs go `processes` (2) at a time, each in a single-threaded worker process (as the demo's GRPO and
SGPO), so both cores of a 2-core machine work.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sgpo.checkpoints import OutputDirError
from sgpo.data import atomic_dir, read_rows, write_json
from sgpo.evaluation.report import read_metrics
from sgpo.world.evaluate import auto_and_guided, heldout_accuracy
from sgpo.world.experiment_results import SELECTIVITY_FILE, SELECTIVITY_METHODS, rate_means, selectivity, write_outputs
from sgpo.world.generate import GENERALISATION_SPLITS, SPLITS, WorldSpec
from sgpo.world.methods import DEFAULT_METHODS, METHODS, REFERENCE, RUN_FILE, method_config_kwargs, run_dir, setup_dir
from sgpo.world.model import ModelSpec, has_saved_model, load_model, save_model
from sgpo.world.pipeline import run_pipeline, train_rl
from sgpo.world.progress import StageProgress
from sgpo.world.settings import TrainSettings, WorldRunConfig, experiment_base
from sgpo.world.train_data import variant_file, write_variants
from sgpo.world.warmup import WarmupConfig, warmup
from sgpo.world.workers import run_in_workers, set_determinism

EXPERIMENT_FILE = "experiment.json"


# fields added after the first experiments: left out of experiment.json (and so of the hash) at their
# defaults, so that every earlier config keeps its hash and its folder
OMITTED_AT_DEFAULT = frozenset(
    {"larger_model", "larger_methods", "gate_samples", "gate_teacher_rows", "preregistration", "tuning_seeds"}
)
#: fields that do not decide any number: how many runs go side by side, and where the hash is kept
NOT_NUMBERS = ("processes", "preregistration")


def numbers_part(d: Mapping[str, Any]) -> dict[str, Any]:
    """An experiment's `to_dict` without `NOT_NUMBERS`: what its hash covers, and what a folder resumed
    under another call must agree on (another `processes`, or the pre-registration's path as seen from
    another YAML file, resume the same runs)."""
    return {k: v for k, v in d.items() if k not in NOT_NUMBERS}


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines the experiment's numbers."""

    setup: WorldRunConfig  # world (with a validation split), model, warm-up; `setup.train` is every run's budget
    learning_rates: tuple[float, ...] = (1e-5, 5e-5, 2e-4)  # the grid every method is tuned on
    seeds: int = 3  # RL seeds per method at its chosen rate (0 … seeds-1; those below tuning_seeds are tuning runs)
    # RL seeds per rate whose mean validation accuracy chooses the rate (C8's selection on the mean over seeds)
    tuning_seeds: int = 1
    methods: tuple[str, ...] = DEFAULT_METHODS
    compare: Mapping[str, str] = field(default_factory=dict)  # method: the method it is subtracted from in the
    # bootstrap intervals (reference − method); empty: REFERENCE minus each other method
    selectivity_rows: int = 60  # validation records the selectivity statistic is computed on
    bootstrap_samples: int = 2000
    processes: int = 2  # runs at a time, one single-threaded process each
    larger_model: ModelSpec | None = None  # the second model size (the gate's C10; `larger_methods` run there)
    larger_methods: tuple[str, ...] = ()
    gate_samples: int = 16  # C1: samples per training problem for its autonomous pass rate
    gate_teacher_rows: int = 120  # C4: validation problems whose guided rollouts are scored token by token
    preregistration: str | None = None  # the pre-registration file holding this config's hash (confirmatory runs)

    def to_dict(self) -> dict[str, Any]:  # without the fields at their defaults that older experiment.json files lack
        d = {"setup": self.setup.to_dict()}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "setup" or (f.name == "compare" and not self.compare):
                continue
            if f.name in OMITTED_AT_DEFAULT and v == f.default:
                continue
            d[f.name] = v.to_dict() if isinstance(v, ModelSpec) else list(v) if isinstance(v, tuple) else v
        return d

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of everything that determines the numbers (`processes`, how many
        runs go side by side, and `preregistration`, where the hash is kept, are left out)."""
        d = numbers_part(self.to_dict())
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def references(self) -> dict[str, str]:
        """{method: reference}: the intervals are of reference minus method."""
        return dict(self.compare) or {m: REFERENCE for m in self.methods if m != REFERENCE}

    def run_settings(self, lr: float, seed: int) -> TrainSettings:
        return replace(self.setup.train, learning_rate=lr, seed=seed)

    def sizes(self) -> dict[str, WorldRunConfig]:
        """The model sizes: {"base": setup} and, with a larger model, {"larger": setup with that model}."""
        out = {"base": self.setup}
        if self.larger_model is not None:
            out["larger"] = replace(self.setup, model=self.larger_model)
        return out


class ConfigError(ValueError):
    """A mistake in the experiment's YAML file: one line naming the file and the field."""


TOP_KEYS = (
    "setting",
    "seed",
    "world",
    "model",
    "larger_model",
    "larger_methods",
    "warmup",
    "evaluation",
    "gate",
    "preregistration",
    "train",
    "learning_rates",
    "seeds",
    "tuning_seeds",
    "methods",
    "selectivity_rows",
    "bootstrap_samples",
    "processes",
    "compare",
    "quick",
)
TRAIN_KEYS = tuple(f.name for f in fields(TrainSettings) if f.name not in ("learning_rate", "seed"))
WORLD_KEYS = (*SPLITS, "families", "list_length", "longer_length", "warmup_length")
MODEL_KEYS = tuple(f.name for f in fields(ModelSpec))
WARMUP_KEYS = tuple(f.name for f in fields(WarmupConfig) if f.name not in ("seed", "save_every"))
EVALUATION_KEYS = ("samples", "temperature", "guided_samples", "max_new_tokens")
GATE_KEYS = ("samples", "teacher_rows")


class _Fields:
    """Checks of the values of one experiment file, each error one line naming the file and the field."""

    def __init__(self, where: str):
        self.where = where

    def keys(self, d: Any, known: Sequence[str], section: str) -> dict:
        if not isinstance(d, dict):
            raise ConfigError(f"{self.where}: {section} must be a mapping")
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ConfigError(f"{self.where}: {section}: unknown key {unknown[0]!r}; keys: {', '.join(known)}")
        return d

    def number(self, value: Any, name: str, kind=float, minimum: float | None = None) -> Any:
        try:
            if isinstance(value, bool) or (kind is int and not isinstance(value, int)):
                raise ValueError
            out = kind(value)  # a YAML 1e-5 (no dot) is a string: float() reads it
        except (TypeError, ValueError):
            raise ConfigError(
                f"{self.where}: {name} must be a{'n integer' if kind is int else ' number'}, got {value!r}"
            ) from None
        if minimum is not None and not out >= minimum or (kind is float and not math.isfinite(out)):
            raise ConfigError(f"{self.where}: {name} must be >= {minimum}, got {value!r}")
        return out

    def train_value(self, default: Any, key: str, value: Any) -> Any:
        """`value` of the type of the field's `default`: str, int or float."""
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{self.where}: train.{key} must be a string, got {value!r}")
            return value
        return self.number(value, f"train.{key}", type(default), 0)


def _read_yaml(path: Path, quick: bool, seeds: int | None, f: _Fields) -> dict[str, Any]:
    """The file's top-level mapping, checked, with its `quick:` section and `seeds` applied."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{f.where}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{f.where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{f.where}: must be a mapping of the keys {', '.join(TOP_KEYS)}")
    f.keys(raw, TOP_KEYS, "top level")
    if quick:
        over = f.keys(raw.get("quick") or {}, [k for k in TOP_KEYS if k != "quick"], "quick")
        raw = {**raw, **over}
    if seeds is not None:
        raw["seeds"] = seeds
    return raw


def _methods(raw: dict[str, Any], f: _Fields) -> tuple[list[str], dict[str, str]]:
    """(methods, compare): the compared methods and each one's bootstrap reference, checked."""
    methods = raw.get("methods", list(DEFAULT_METHODS))
    if not isinstance(methods, list) or not methods:
        raise ConfigError(f"{f.where}: methods must be a non-empty list; methods: {', '.join(METHODS)}")
    for i, m in enumerate(methods):
        if m not in METHODS:
            raise ConfigError(f"{f.where}: methods[{i}]: unknown method {m!r}; methods: {', '.join(METHODS)}")
    compare = f.keys(raw.get("compare") or {}, methods, "compare")
    for m, ref in compare.items():
        if ref not in methods or ref == m:
            raise ConfigError(f"{f.where}: compare.{m}: the reference must be another of the methods, got {ref!r}")
    if not compare and REFERENCE not in methods:
        raise ConfigError(
            f"{f.where}: methods must include {REFERENCE!r} (the intervals are of SGPO minus each other method), "
            "or compare must name each method's reference"
        )
    return methods, compare


def load_config(path: str | Path, *, quick: bool = False, seeds: int | None = None) -> ExperimentConfig:
    """The experiment of the YAML file at `path` (experiments/world_v1.yaml documents the keys,
    experiments/strategy_library.yaml the `compare` map of bootstrap references);
    with `quick`, its `quick:` section's keys replace the top-level ones; `seeds` replaces `seeds`."""
    path = Path(path)
    f = _Fields(str(path))
    raw = _read_yaml(path, quick, seeds, f)
    setting = raw.get("setting", "full")
    if setting not in ("full", "quick"):
        raise ConfigError(f"{f.where}: setting must be 'full' (the demo's model and warm-up) or 'quick', got {setting!r}")
    seed = f.number(raw.get("seed", 0), "seed", int, 0)
    base = experiment_base(seed, quick=setting == "quick")
    world = _world(raw.get("world", base.world.to_dict()["per_family"]), base.world, f)
    train = f.keys(raw.get("train") or {}, TRAIN_KEYS, "train")
    train = {k: f.train_value(getattr(base.train, k), k, v) for k, v in train.items()}
    lrs = raw.get("learning_rates", list(ExperimentConfig.learning_rates))
    if not isinstance(lrs, list) or not lrs:
        raise ConfigError(f"{f.where}: learning_rates must be a non-empty list of numbers")
    lrs = tuple(f.number(v, f"learning_rates[{i}]", float, 0) for i, v in enumerate(lrs))
    if len(set(lrs)) != len(lrs) or min(lrs) <= 0:
        raise ConfigError(f"{f.where}: learning_rates must be distinct positive numbers, got {list(lrs)}")
    methods, compare = _methods(raw, f)
    larger = raw.get("larger_methods", [])
    if not isinstance(larger, list) or any(m not in methods for m in larger):
        raise ConfigError(f"{f.where}: larger_methods must be a list of the methods, got {larger!r}")
    evaluation = f.keys(raw.get("evaluation") or {}, EVALUATION_KEYS, "evaluation")
    gate = f.keys(raw.get("gate") or {}, GATE_KEYS, "gate")
    setup = replace(
        base,
        world=world,
        model=_model(raw.get("model"), base.model, "model", f),
        warmup=_warmup(raw.get("warmup"), base.warmup, f),
        train=replace(base.train, seed=0, learning_rate=lrs[0], **train),  # every run takes its rate from the grid
        eval_samples=f.number(evaluation.get("samples", base.eval_samples), "evaluation.samples", int, 1),
        eval_temperature=f.number(evaluation.get("temperature", base.eval_temperature), "evaluation.temperature", float, 0),
        eval_guided_samples=f.number(
            evaluation.get("guided_samples", base.eval_guided_samples), "evaluation.guided_samples", int, 1
        ),
        eval_max_new_tokens=f.number(
            evaluation.get("max_new_tokens", base.eval_max_new_tokens), "evaluation.max_new_tokens", int, 1
        ),
    )
    if max(setup.eval_samples, setup.eval_guided_samples) > 1 and setup.eval_temperature == 0:
        raise ConfigError(f"{f.where}: evaluation.samples > 1 needs evaluation.temperature > 0 (greedy samples are all the same)")
    seeds = f.number(raw.get("seeds", 3), "seeds", int, 1)
    tuning_seeds = f.number(raw.get("tuning_seeds", 1), "tuning_seeds", int, 1)
    if tuning_seeds > seeds:
        raise ConfigError(f"{f.where}: tuning_seeds ({tuning_seeds}) must be at most seeds ({seeds})")
    prereg = None if quick else raw.get("preregistration")  # a smoke test is never the pre-registered experiment
    if prereg is not None and not isinstance(prereg, str):
        raise ConfigError(f"{f.where}: preregistration must be the path of the pre-registration file, got {prereg!r}")
    if prereg is not None:  # a relative path is relative to the YAML file, wherever the command runs from
        prereg = str(path.parent / prereg)
    return ExperimentConfig(
        setup=setup,
        learning_rates=lrs,
        seeds=seeds,
        tuning_seeds=tuning_seeds,
        methods=tuple(methods),
        compare=compare,
        selectivity_rows=f.number(raw.get("selectivity_rows", 60), "selectivity_rows", int, 1),
        bootstrap_samples=f.number(raw.get("bootstrap_samples", 2000), "bootstrap_samples", int, 1),
        processes=f.number(raw.get("processes", 2), "processes", int, 1),
        larger_model=None if raw.get("larger_model") is None else _model(raw["larger_model"], setup.model, "larger_model", f),
        larger_methods=tuple(larger),
        gate_samples=f.number(gate.get("samples", 16), "gate.samples", int, 1),
        gate_teacher_rows=f.number(gate.get("teacher_rows", 120), "gate.teacher_rows", int, 1),
        preregistration=prereg,
    )


def _world(raw: Any, base: WorldSpec, f: _Fields) -> WorldSpec:
    """`world:` — problems per family of each split, and optionally `families` (a world's name or a
    list of family names), `list_length`, `longer_length` and `warmup_length` ([min, max])."""
    raw = f.keys(raw, WORLD_KEYS, "world")
    counts = {k: f.number(v, f"world.{k}", int, 1) for k, v in raw.items() if k in SPLITS}
    missing = [s for s in ("heldout", "train", "warmup", "validation") if s not in counts]
    if missing:
        raise ConfigError(f"{f.where}: world: needs a number of problems per family for every split; missing {missing[0]!r}")
    extra: dict[str, Any] = {}
    for key in ("list_length", "longer_length", "warmup_length"):
        if key in raw:
            v = raw[key]
            if not (isinstance(v, list) and len(v) == 2):
                raise ConfigError(f"{f.where}: world.{key} must be [min, max], got {v!r}")
            extra[key] = tuple(f.number(x, f"world.{key}", int, 1) for x in v)
    try:
        return WorldSpec(per_family=counts, families=raw.get("families", base.families), **extra)
    except ValueError as exc:
        raise ConfigError(f"{f.where}: world: {exc}") from None


def _model(raw: Any, base: ModelSpec, section: str, f: _Fields) -> ModelSpec:
    if raw is None:
        return base
    raw = f.keys(raw, MODEL_KEYS, section)
    return replace(base, **{k: f.number(v, f"{section}.{k}", type(getattr(base, k)), 1) for k, v in raw.items()})


def _warmup(raw: Any, base: WarmupConfig, f: _Fields) -> WarmupConfig:
    if raw is None:
        return base
    raw = f.keys(raw, WARMUP_KEYS, "warmup")
    values: dict[str, Any] = {}
    for k, v in raw.items():
        if k == "auto_exposure":
            exposure = f.keys(v or {}, [fam for fam in v or {}], "warmup.auto_exposure")
            values[k] = {fam: f.number(e, f"warmup.auto_exposure.{fam}", float, 0) for fam, e in exposure.items()}
        elif k == "auto_max_numbers":
            values[k] = f.number(v, f"warmup.{k}", int, 1)
        elif k == "wording_exposure":
            if not isinstance(v, list) or not v:
                raise ConfigError(
                    f"{f.where}: warmup.wording_exposure: a list of shares in [0, 1], one per question wording, got {v!r}"
                )
            values[k] = tuple(f.number(e, f"warmup.wording_exposure[{i}]", float, 0) for i, e in enumerate(v))
            if max(values[k]) > 1:
                raise ConfigError(f"{f.where}: warmup.wording_exposure: shares in [0, 1], got {v!r}")
        else:
            values[k] = f.number(v, f"warmup.{k}", type(getattr(base, k)), 0)
    out = replace(base, **values)
    if out.wording_exposure is not None and out.auto_exposure:
        raise ConfigError(
            f"{f.where}: warmup: set one of auto_exposure and wording_exposure (auto_exposure: {{}} beside wording_exposure)"
        )
    return out


# -- one run ----------------------------------------------------------------------------------------
def train_sft(
    start: Path, train_rows: Sequence[Mapping[str, Any]], dest: Path, settings: TrainSettings, advance=lambda done: None
) -> None:
    """SFT baseline: supervised training on the oracle (strong) responses of the training problems,
    autonomous prompts, from the model in `start` into `dest`. The world warm-up's loop
    (`sgpo.world.warmup.warmup`) with every example autonomous, the same optimizer steps, problems per
    step (one oracle response each), seed and constant learning rate as an RL run, no weight decay.
    Writes `dest/metrics.jsonl` ({"step", "loss"} per step) like the trainer's."""
    model, tokenizer = load_model(start)
    cfg = WarmupConfig(
        steps=settings.max_steps,
        batch_size=settings.problems_per_step,
        guided_fraction=0.0,
        swap_fraction=0.0,
        auto_exposure={f: 1.0 for f in sorted({r["family"] for r in train_rows})},
        learning_rate=settings.learning_rate,
        warmup_steps=0,
        min_lr_ratio=1.0,
        weight_decay=0.0,
        save_every=settings.max_steps,
        seed=settings.seed,
    )
    losses = warmup(model, tokenizer, train_rows, cfg, on_step=lambda step, _: advance(step))
    save_model(model, tokenizer, dest)
    (dest / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": v}) + "\n" for i, v in enumerate(losses)))


EVAL_PARTS = ("validation", "rest")  # evaluate_run's parts: the validation split, and everything else


def evaluate_run(model, tokenizer, cfg: WorldRunConfig, world: Path, parts: Sequence[str] = EVAL_PARTS) -> dict[str, Any]:
    """A trained model's evaluations, per record: `validation` (autonomous) and, with "rest" in `parts`,
    `test` (autonomous and guided, with `test_greedy` beside when the primary metric is sampled) and
    each generalisation split the world has (`novel`, `longer`; autonomous and guided). Primary
    metric: autonomous pass@1 over `cfg.eval_samples` samples at `cfg.eval_temperature` (sampling
    seed 0); guided accuracy, a reference, over `cfg.eval_guided_samples` (1: one greedy completion)."""
    common = dict(max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size)
    kw = dict(common, samples=cfg.eval_samples, guided_samples=cfg.eval_guided_samples, temperature=cfg.eval_temperature)
    auto = dict(common, samples=cfg.eval_samples, temperature=cfg.eval_temperature, seed=0, per_record=True)
    out = {}
    if "validation" in parts:
        out["validation"] = heldout_accuracy(model, tokenizer, read_rows(world / "validation.jsonl"), modes=("auto",), **auto)
    if "rest" not in parts:
        return out
    out["test"] = auto_and_guided(model, tokenizer, read_rows(world / "heldout.jsonl"), **kw)
    if cfg.eval_samples > 1:
        out["test_greedy"] = heldout_accuracy(model, tokenizer, read_rows(world / "heldout.jsonl"), modes=("auto",), **common)
    for split in GENERALISATION_SPLITS:
        if split in cfg.world.per_family:
            out[split] = auto_and_guided(model, tokenizer, read_rows(world / f"{split}.jsonl"), **kw)
    return out


def _mean_metric(steps: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in steps if key in r]
    return sum(vals) / len(vals) if vals else None


def run_one(
    exp: ExperimentConfig,
    out: Path,
    method: str,
    lr: float,
    seed: int,
    size: str = "base",
    *,
    progress=None,
    validation_only: bool = False,
    need_model: bool = False,
) -> dict[str, Any]:
    """Train `method` at learning rate `lr` with RL seed `seed` from the shared warm-up of model size
    `size`, evaluate it (`evaluate_run`: validation, test, generalisation splits, per record; with
    `validation_only`, the validation split alone — a tuning run, whose rate is chosen on it, and whose
    other evaluations `finish_evaluation` adds if it is chosen); keep it all in `run_dir(...)`/run.json.
    A finished run is read back, not redone (and evaluated further if it was validated only and
    `validation_only` is False). A run whose record was restored without its model
    (`sgpo.world.experiment_records`) is trained again when its model is needed (further evaluations;
    `need_model`), and refused unless it reproduces the record (`check_reproduced`). Returns run.json's content."""
    final = run_dir(out, method, lr, seed, size)
    recorded = json.loads((final / RUN_FILE).read_text()) if (final / RUN_FILE).exists() else None
    if recorded is not None:
        complete = validation_only or "test" in recorded
        if complete and (has_saved_model(final) or not need_model):
            return recorded
        if not complete and has_saved_model(final):
            return finish_evaluation(exp, out, method, lr, seed, size)
    # no run, or the record of one without its model (restored from records): trained (again)
    cfg = exp.sizes()[size]
    set_determinism(seed, cfg.threads)
    setup = setup_dir(out, size)
    settings = exp.run_settings(lr, seed)
    name = f"{method} lr={lr:g} seed={seed}" + ("" if size == "base" else f" ({size})")
    advance = (lambda done: progress.update(name, done)) if progress is not None else (lambda done: None)
    if progress is not None:
        progress.begin(name, settings.max_steps)
    result: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        train_file = variant_file(setup / "world", METHODS[method].data)
        if METHODS[method].base == "sft":
            train_sft(setup / "warmup", read_rows(train_file), tmp, settings, advance)
        else:
            train_rl(setup / "warmup", train_file, tmp, method_config_kwargs(method, settings), advance)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, tokenizer = load_model(tmp)
        evaluations = evaluate_run(model, tokenizer, cfg, setup / "world", ("validation",) if validation_only else EVAL_PARTS)
        logs, _ = read_metrics(tmp / "metrics.jsonl")
        steps = [r for r in logs if "loss" in r and "train_runtime" not in r]
        result.update(
            method=method,
            size=size,
            learning_rate=lr,
            seed=seed,
            **evaluations,
            steps=len(steps),
            generated_tokens=int(sum(r.get("tokens/generated", 0) for r in steps)),
            zero_gradient_steps=sum(1 for r in steps if r.get("grad_norm") == 0.0),
            clip_fraction=_mean_metric(steps, "clip/region"),
            masked_fraction=_mean_metric(steps, "distill/masked_frac"),
            wall_seconds={"train": round(train_s, 2), "evaluate": round(time.perf_counter() - t0, 2)},
            train_file=str(train_file.relative_to(out)),
            config=asdict(settings)
            | ({} if METHODS[method].base == "sft" else {"sgpo_config": method_config_kwargs(method, settings)}),
        )
        write_json(tmp / RUN_FILE, result)

    again = final.with_name(final.name + ".retrained")  # beside the record until it is checked against it
    atomic_dir(again if recorded is not None else final, write)
    if recorded is not None:
        check_reproduced(recorded, result, final)
        shutil.rmtree(final)
        os.replace(again, final)
    if progress is not None:
        progress.end(name)
    return result


EVALUATIONS = ("validation", "test", "test_greedy", *GENERALISATION_SPLITS)  # evaluate_run's keys


class NotReproducedError(RuntimeError):
    """A run trained again from its record (its model was not kept) evaluates differently from it."""


def check_reproduced(recorded: Mapping[str, Any], result: Mapping[str, Any], where: Path) -> None:
    """Raise `NotReproducedError` unless run `result`, trained again, has every evaluation `recorded`
    has (validation, test, generalisation splits; per problem): only then is the record's run this one,
    and its further evaluations may join the record's."""
    again = json.loads(json.dumps(dict(result)))
    if any(recorded[k] != again[k] for k in EVALUATIONS if k in recorded and k in again):
        raise NotReproducedError(
            f"{where}: trained again (its model was not kept), the run's evaluations differ from its "
            f"run.json; this machine does not reproduce the recorded runs, so they cannot be combined with new ones"
        )


def finish_evaluation(exp: ExperimentConfig, out: Path, method: str, lr: float, seed: int, size: str = "base") -> dict[str, Any]:
    """A finished run evaluated on the validation split only (a tuning run) gets the rest of
    `evaluate_run` (test, greedy, generalisation splits) from its saved model; run.json is rewritten
    in one move. A run evaluated in full is read back as it is. Returns run.json's content."""
    path = run_dir(out, method, lr, seed, size) / RUN_FILE
    result = json.loads(path.read_text())
    if "test" in result:
        return result
    cfg = exp.sizes()[size]
    set_determinism(seed, cfg.threads)
    t0 = time.perf_counter()
    model, tokenizer = load_model(path.parent)
    result.update(evaluate_run(model, tokenizer, cfg, setup_dir(out, size) / "world", ("rest",)))
    result["wall_seconds"]["evaluate"] = round(result["wall_seconds"]["evaluate"] + time.perf_counter() - t0, 2)
    tmp = path.with_name(RUN_FILE + ".tmp")
    write_json(tmp, result)
    tmp.replace(path)
    return result


# -- the experiment ---------------------------------------------------------------------------------
def prepare_experiment(out: str | Path, exp: ExperimentConfig, overwrite: bool = False) -> Path:
    """Create `out`, or check that it holds a (partial) run of the same experiment; `overwrite`: start clean.
    A folder holding only `setup/` (another experiment's, copied in to reuse its world and warm-up) is
    a start: the pipeline checks that its configuration is this experiment's `setup`. A folder of the
    same experiment with fewer learning rates, seeds or tuning seeds is taken on (the grid-edge rule: a
    rate chosen on the grid's edge widens the grid for every method; more seeds narrow the intervals;
    more tuning seeds choose each rate on a steadier mean): runs are keyed by method, rate and seed, so
    the finished ones are kept and only the new ones run; any other difference is refused."""
    out = Path(out)
    path = out / EXPERIMENT_FILE
    if overwrite and out.exists():
        shutil.rmtree(out)
    mine = json.loads(json.dumps(exp.to_dict()))
    if out.exists() and any(p.name != "setup" for p in out.iterdir()):
        if not path.exists():
            raise OutputDirError(f"{out}: the folder holds other files; choose another --out or pass --overwrite")
        recorded = json.loads(path.read_text())
        if not resumable(recorded, mine):
            raise OutputDirError(f"{out}: holds an experiment of another configuration ({path}); pass --overwrite to replace it")
        if numbers_part(recorded) != numbers_part(mine):
            grid = lambda d: f"learning rates {d['learning_rates']}, {d['seeds']} seeds, {d.get('tuning_seeds', 1)} tuning seeds"  # noqa: E731
            print(f"{out}: extended from {grid(recorded)} to {grid(mine)}; finished runs are kept", file=sys.stderr)
        if recorded != mine:
            write_json(path, mine)
    out.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_json(path, mine)
    return out


def resumable(recorded: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a folder holding experiment `recorded` (its experiment.json) can go on under `new`: the
    same numbers (`numbers_part`), or an extension of them (`extends`)."""
    return numbers_part(recorded) == numbers_part(new) or extends(recorded, new)


def extends(recorded: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether experiment settings `new` are `recorded` with learning rates, seeds or tuning seeds
    added (at least one of them) and nothing else changed."""
    old_grid, new_grid = set(recorded.get("learning_rates", ())), set(new.get("learning_rates", ()))
    counts = [(recorded.get(k, 1), new.get(k, 1)) for k in ("seeds", "tuning_seeds")]
    rest = ("learning_rates", "seeds", "tuning_seeds")
    same_rest = {**numbers_part(recorded), **dict.fromkeys(rest)} == {**numbers_part(new), **dict.fromkeys(rest)}
    grown = old_grid < new_grid or any(a < b for a, b in counts)
    return same_rest and old_grid <= new_grid and all(a <= b for a, b in counts) and grown


def choose_rate(runs: Sequence[Mapping[str, Any]]) -> float:
    """The learning rate whose runs (one per tuning seed) have the best mean validation autonomous
    accuracy (ties: the smaller rate)."""
    means = rate_means(runs)
    return max(means, key=lambda lr: (means[lr], -lr))


GATE_FILE = "gate.json"


def preregistered_hash(path: str | Path) -> str | None:
    """The config hash a pre-registration file states (a line `config hash: <64 hex digits>`; the last
    such line, so that a dated amendment below the original, e.g. a widened grid, takes over), or None."""
    import re

    found = re.findall(r"config hash:\W*([0-9a-f]{64})", Path(path).read_text(encoding="utf-8"))
    return found[-1] if found else None


def status_of(exp: ExperimentConfig, out: Path, exploratory: bool) -> str:
    """ "confirmatory" when the config is the pre-registered one and its gate passed; otherwise
    "exploratory" — which a config that names a pre-registration must ask for (`exploratory`), else
    `ConfigError`: results under a changed config are never written as the pre-registered ones."""
    if exploratory or exp.preregistration is None:
        return "exploratory"
    path = Path(exp.preregistration)
    if not path.is_file():
        raise ConfigError(f"preregistration: {path}: no such file")
    registered, mine = preregistered_hash(path), exp.config_hash()
    if registered != mine:
        raise ConfigError(
            f"{path} pre-registers config hash {registered}, but this config's is {mine}: a changed config gives "
            "exploratory results only (pass --exploratory), never confirmatory ones"
        )
    gate = out / GATE_FILE
    verdict = json.loads(gate.read_text()) if gate.is_file() else {}
    if verdict.get("config_hash") != mine or not verdict.get("passed"):
        raise ConfigError(
            f"{out}: no passing gate for this config ({gate}); run `sgpo experiment --gate` first, or pass --exploratory"
        )
    return "confirmatory"


def prepare_setup(out: Path, exp: ExperimentConfig, size: str, progress) -> None:
    """The world and the warm-up of model size `size` (`setup/`, `setup-larger/`), built or resumed;
    each is built just before its size's runs, so a call that has only base-size runs left (their
    records restored: `sgpo.world.experiment_records`) does not build the larger warm-up first."""
    run_pipeline(setup_dir(out, size), exp.sizes()[size], methods=(), progress=progress)
    methods = exp.methods if size == "base" else exp.larger_methods
    if any(METHODS[m].data != "own" for m in methods):
        write_variants(setup_dir(out, size) / "world", exp.setup.seed)


def run_all(
    out: Path,
    exp: ExperimentConfig,
    jobs: Sequence[tuple[str, float, int, str]],
    progress,
    validation_only: bool = False,
    need_model: bool = False,
) -> list[dict[str, Any]]:
    """run.json of each job (method, lr, seed, size): read back when finished (and evaluated in full
    unless `validation_only`; with its model kept if `need_model`), else run in worker processes
    (`run_one`, which trains a run restored from records again when its model is needed)."""

    def finished(j) -> bool:
        p = run_dir(out, *j) / RUN_FILE
        return (
            p.exists()
            and (validation_only or "test" in json.loads(p.read_text()))
            and (not need_model or has_saved_model(p.parent))
        )

    done = {j: json.loads((run_dir(out, *j) / RUN_FILE).read_text()) for j in jobs if finished(j)}
    todo = [j for j in jobs if j not in done]
    relay = lambda kind, name, x: getattr(progress, kind)(name, x)  # noqa: E731
    if todo:
        calls = [(run_one, (exp, out, *j), {"validation_only": validation_only, "need_model": need_model}) for j in todo]
        done.update(zip(todo, run_in_workers(calls, relay, processes=min(exp.processes, len(todo)))))
    return [done[j] for j in jobs]


def tune_and_seed(out: Path, exp: ExperimentConfig, methods: Sequence[str], size: str, progress, walls: dict[str, float]):
    """Every method of `methods` at every rate of the grid (seeds below `tuning_seeds`), evaluated on
    the validation split only and its rate chosen there; then the chosen rate's runs evaluated in full (test, generalisation
    splits: the test split is never evaluated for a rate that was not chosen, so nothing can be chosen
    on it) and the further seeds there; returns (runs, {method: chosen rate})."""
    suffix = "" if size == "base" else f" ({size})"
    t0 = time.perf_counter()
    grid = [(m, lr, s, size) for m in methods for lr in exp.learning_rates for s in range(exp.tuning_seeds)]
    tuning = run_all(out, exp, grid, progress, validation_only=True)
    walls[f"tuning runs{suffix}"] = round(time.perf_counter() - t0, 1)
    chosen = {m: choose_rate([r for r in tuning if r["method"] == m]) for m in methods}
    t0 = time.perf_counter()
    jobs = [
        (m, chosen[m], s, size) for m in methods for s in range(exp.seeds)
    ]  # below tuning_seeds: tuning runs, evaluated further
    full = {(r["method"], r["learning_rate"], r["seed"]): r for r in run_all(out, exp, jobs, progress)}
    walls[f"further seeds{suffix}"] = round(time.perf_counter() - t0, 1)
    tuning = [full.get((r["method"], r["learning_rate"], r["seed"]), r) for r in tuning]
    return tuning + [full[j[:3]] for j in jobs if j[2] >= exp.tuning_seeds], chosen


def run_experiment(
    out: str | Path, exp: ExperimentConfig, *, overwrite: bool = False, progress=None, exploratory: bool = False
) -> dict[str, Any]:
    """The whole protocol (module doc), resuming whatever an earlier call finished; writes the
    outputs (`sgpo.world.experiment_results.write_outputs`, marked confirmatory or exploratory:
    `status_of`) and returns results.json's content."""
    out = prepare_experiment(out, exp, overwrite)
    status = status_of(exp, out, exploratory)
    progress = progress or StageProgress(enabled=False)
    started = time.perf_counter()
    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    prepare_setup(out, exp, "base", progress)
    walls["setup (world, warm-up)"] = round(time.perf_counter() - t0, 1)
    runs, chosen = tune_and_seed(out, exp, exp.methods, "base", progress, walls)
    larger: dict[str, Any] = {}
    if exp.larger_model is not None and exp.larger_methods:
        t0 = time.perf_counter()
        prepare_setup(out, exp, "larger", progress)
        walls["setup (world, warm-up) (larger)"] = round(time.perf_counter() - t0, 1)
        larger_runs, larger_chosen = tune_and_seed(out, exp, exp.larger_methods, "larger", progress, walls)
        larger = {"runs": larger_runs, "chosen": larger_chosen}
    t0 = time.perf_counter()
    # selectivity scores the seed-0 models of SGPO and the imitation ablation: trained again where only their records are here
    jobs = [(m, chosen[m], 0, "base") for m in SELECTIVITY_METHODS if m in chosen]
    if not (out / SELECTIVITY_FILE).exists():
        run_all(out, exp, jobs, progress, need_model=True)
    with progress.stage("selectivity", 1):
        sel = selectivity(out, exp, chosen)
    walls["selectivity"] = round(time.perf_counter() - t0, 1)
    return write_outputs(out, exp, runs, chosen, sel, walls, started, status=status, larger=larger)
