"""`sgpo experiment`: SGPO against its baselines and ablations on the strategy world, under one protocol.

    sgpo experiment --config experiments/strategy_world.yaml --out runs/experiment [--seeds N] [--quick]

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
2. tuning: every method is trained once (RL seed 0) at every learning rate of the same grid, and its
   rate is the one with the best greedy autonomous accuracy on the validation split (ties: the
   smaller rate);
3. seeds: every method is trained at its chosen rate with RL seeds 1 … N-1 too (seed 0 is the
   tuning run); every run is evaluated on the held-out test split (autonomous and guided);
4. results (`sgpo.world.experiment_results`): mean ± std over seeds, paired bootstrap intervals of
   SGPO minus each other method (or of the config's `compare` pairs), per-family accuracy, learning curves, selectivity, instance weights.

Output folder:

    experiment.json                     the experiment's configuration (a rerun must match it)
    setup/                              the pipeline's folder: world/, tokenizer/, warmup/, eval/warmup.json
    runs/<method>/lr=<lr>,seed=<s>/     one run: the model, metrics.jsonl, run.json (its evaluations)
    selectivity.json, results.json, results.md, plots/*.png

A run trains into `<run>.tmp/` and is renamed into place with its `run.json` written, so a rerun after
an interruption skips every finished run and redoes only the unfinished ones.

Runs go `processes` (2) at a time, each in a single-threaded worker process (as the demo's GRPO and
SGPO), so both cores of a 2-core machine work.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sgpo.checkpoints import OutputDirError
from sgpo.data import atomic_dir, read_rows, write_json
from sgpo.evaluation.report import read_metrics
from sgpo.world.evaluate import heldout_accuracy
from sgpo.world.experiment_results import selectivity, write_outputs
from sgpo.world.generate import SPLITS, WorldSpec
from sgpo.world.methods import DEFAULT_METHODS, METHODS, REFERENCE, RUN_FILE, method_config_kwargs, run_dir
from sgpo.world.model import load_model, save_model
from sgpo.world.pipeline import run_pipeline, train_rl
from sgpo.world.progress import StageProgress
from sgpo.world.settings import TrainSettings, WorldRunConfig, make_config
from sgpo.world.train_data import variant_file, write_variants
from sgpo.world.warmup import WarmupConfig, warmup
from sgpo.world.workers import run_in_workers, set_determinism

EXPERIMENT_FILE = "experiment.json"


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines the experiment's numbers."""

    setup: WorldRunConfig  # world (with a validation split), model, warm-up; `setup.train` is every run's budget
    learning_rates: tuple[float, ...] = (1e-5, 5e-5, 2e-4)  # the grid every method is tuned on
    seeds: int = 3  # RL seeds per method at its chosen rate (0 … seeds-1; seed 0 is the tuning run)
    methods: tuple[str, ...] = DEFAULT_METHODS
    compare: Mapping[str, str] = field(default_factory=dict)  # method: the method it is subtracted from in the
    # bootstrap intervals (reference − method); empty: REFERENCE minus each other method
    selectivity_rows: int = 60  # validation records the selectivity statistic is computed on
    bootstrap_samples: int = 2000
    processes: int = 2  # runs at a time, one single-threaded process each

    def to_dict(self) -> dict[str, Any]:  # without an empty `compare`, as experiment.json was before it existed
        return {
            "setup": self.setup.to_dict(),
            **{
                f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)
                if f.name != "setup" and (f.name != "compare" or self.compare)
            },
        }

    def references(self) -> dict[str, str]:
        """{method: reference}: the intervals are of reference minus method."""
        return dict(self.compare) or {m: REFERENCE for m in self.methods if m != REFERENCE}

    def run_settings(self, lr: float, seed: int) -> TrainSettings:
        return replace(self.setup.train, learning_rate=lr, seed=seed)


class ConfigError(ValueError):
    """A mistake in the experiment's YAML file: one line naming the file and the field."""


TOP_KEYS = (
    "setting",
    "seed",
    "world",
    "train",
    "learning_rates",
    "seeds",
    "methods",
    "selectivity_rows",
    "bootstrap_samples",
    "processes",
    "compare",
    "quick",
)
TRAIN_KEYS = tuple(f.name for f in fields(TrainSettings) if f.name not in ("learning_rate", "seed"))


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
    """The experiment of the YAML file at `path` (experiments/strategy_world.yaml documents the keys,
    experiments/strategy_library.yaml the `compare` map of bootstrap references);
    with `quick`, its `quick:` section's keys replace the top-level ones; `seeds` replaces `seeds`."""
    path = Path(path)
    f = _Fields(str(path))
    raw = _read_yaml(path, quick, seeds, f)
    setting = raw.get("setting", "full")
    if setting not in ("full", "quick"):
        raise ConfigError(f"{f.where}: setting must be 'full' (the demo's model and warm-up) or 'quick', got {setting!r}")
    seed = f.number(raw.get("seed", 0), "seed", int, 0)
    base = make_config(seed, quick=setting == "quick")
    world = f.keys(raw.get("world", dict(base.world.per_family)), SPLITS, "world")
    world = {k: f.number(v, f"world.{k}", int, 1) for k, v in world.items()}
    missing = [s for s in SPLITS if s not in world]
    if missing:
        raise ConfigError(f"{f.where}: world: needs a number of problems per family for every split; missing {missing[0]!r}")
    train = f.keys(raw.get("train") or {}, TRAIN_KEYS, "train")
    train = {k: f.train_value(getattr(base.train, k), k, v) for k, v in train.items()}
    lrs = raw.get("learning_rates", list(ExperimentConfig.learning_rates))
    if not isinstance(lrs, list) or not lrs:
        raise ConfigError(f"{f.where}: learning_rates must be a non-empty list of numbers")
    lrs = tuple(f.number(v, f"learning_rates[{i}]", float, 0) for i, v in enumerate(lrs))
    if len(set(lrs)) != len(lrs) or min(lrs) <= 0:
        raise ConfigError(f"{f.where}: learning_rates must be distinct positive numbers, got {list(lrs)}")
    methods, compare = _methods(raw, f)
    setup = replace(base, world=WorldSpec(per_family=world), train=replace(base.train, seed=0, **train))
    return ExperimentConfig(
        setup=setup,
        learning_rates=lrs,
        seeds=f.number(raw.get("seeds", 3), "seeds", int, 1),
        methods=tuple(methods),
        compare=compare,
        selectivity_rows=f.number(raw.get("selectivity_rows", 60), "selectivity_rows", int, 1),
        bootstrap_samples=f.number(raw.get("bootstrap_samples", 2000), "bootstrap_samples", int, 1),
        processes=f.number(raw.get("processes", 2), "processes", int, 1),
    )


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
        auto_families=tuple(sorted({r["family"] for r in train_rows})),
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


def run_one(exp: ExperimentConfig, out: Path, method: str, lr: float, seed: int, *, progress=None) -> dict[str, Any]:
    """Train `method` at learning rate `lr` with RL seed `seed` from the shared warm-up, evaluate it on
    the validation split (autonomous) and the test split (autonomous and guided), per record; keep it
    all in `run_dir(...)`/run.json. A finished run is read back, not redone. Returns run.json's content."""
    final = run_dir(out, method, lr, seed)
    if (final / RUN_FILE).exists():
        return json.loads((final / RUN_FILE).read_text())
    set_determinism(seed, exp.setup.threads)
    setup = out / "setup"
    settings = exp.run_settings(lr, seed)
    name = f"{method} lr={lr:g} seed={seed}"
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
        kw = dict(max_new_tokens=exp.setup.eval_max_new_tokens, batch_size=exp.setup.eval_batch_size, per_record=True)
        validation = heldout_accuracy(model, tokenizer, read_rows(setup / "world" / "validation.jsonl"), modes=("auto",), **kw)
        test = heldout_accuracy(model, tokenizer, read_rows(setup / "world" / "heldout.jsonl"), **kw)
        logs, _ = read_metrics(tmp / "metrics.jsonl")
        steps = [r for r in logs if "loss" in r and "train_runtime" not in r]
        result.update(
            method=method,
            learning_rate=lr,
            seed=seed,
            validation=validation,
            test=test,
            steps=len(steps),
            generated_tokens=int(sum(r.get("tokens/generated", 0) for r in steps)),
            zero_gradient_steps=sum(1 for r in steps if r.get("grad_norm") == 0.0),
            wall_seconds={"train": round(train_s, 2), "evaluate": round(time.perf_counter() - t0, 2)},
            train_file=str(train_file.relative_to(out)),
            config=asdict(settings)
            | ({} if METHODS[method].base == "sft" else {"sgpo_config": method_config_kwargs(method, settings)}),
        )
        write_json(tmp / RUN_FILE, result)

    atomic_dir(final, write)
    if progress is not None:
        progress.end(name)
    return result


# -- the experiment ---------------------------------------------------------------------------------
def prepare_experiment(out: str | Path, exp: ExperimentConfig, overwrite: bool = False) -> Path:
    """Create `out`, or check that it holds a (partial) run of the same experiment; `overwrite`: start clean.
    A folder holding only `setup/` (another experiment's, copied in to reuse its world and warm-up) is
    a start: the pipeline checks that its configuration is this experiment's `setup`."""
    out = Path(out)
    path = out / EXPERIMENT_FILE
    if overwrite and out.exists():
        shutil.rmtree(out)
    if out.exists() and any(p.name != "setup" for p in out.iterdir()):
        if not path.exists():
            raise OutputDirError(f"{out}: the folder holds other files; choose another --out or pass --overwrite")
        if json.loads(path.read_text()) != json.loads(json.dumps(exp.to_dict())):
            raise OutputDirError(f"{out}: holds an experiment of another configuration ({path}); pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_json(path, exp.to_dict())
    return out


def choose_rate(runs: Sequence[Mapping[str, Any]]) -> float:
    """The learning rate of the run with the best validation autonomous accuracy (ties: the smaller rate)."""
    best = max(runs, key=lambda r: (r["validation"]["auto"], -r["learning_rate"]))
    return best["learning_rate"]


def run_experiment(out: str | Path, exp: ExperimentConfig, *, overwrite: bool = False, progress=None) -> dict[str, Any]:
    """The whole protocol (module doc), resuming whatever an earlier call finished; writes the
    outputs (`sgpo.world.experiment_results.write_outputs`) and returns results.json's content."""
    out = prepare_experiment(out, exp, overwrite)
    progress = progress or StageProgress(enabled=False)
    started = time.perf_counter()
    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    run_pipeline(out / "setup", exp.setup, methods=(), progress=progress)
    if any(METHODS[m].data != "own" for m in exp.methods):
        write_variants(out / "setup" / "world", exp.setup.seed)
    walls["setup (world, warm-up)"] = round(time.perf_counter() - t0, 1)

    def run_all(jobs: Sequence[tuple[str, float, int]]) -> list[dict[str, Any]]:
        """run.json of each job: read back when finished, else run (in worker processes)."""
        done = {j: json.loads(p.read_text()) for j in jobs if (p := run_dir(out, *j) / RUN_FILE).exists()}
        todo = [j for j in jobs if j not in done]
        relay = lambda kind, name, x: getattr(progress, kind)(name, x)  # noqa: E731
        if todo:
            calls = [(run_one, (exp, out, *j), {}) for j in todo]
            done.update(zip(todo, run_in_workers(calls, relay, processes=min(exp.processes, len(todo)))))
        return [done[j] for j in jobs]

    t0 = time.perf_counter()
    tuning = run_all([(m, lr, 0) for m in exp.methods for lr in exp.learning_rates])
    walls["tuning runs"] = round(time.perf_counter() - t0, 1)
    chosen = {m: choose_rate([r for r in tuning if r["method"] == m]) for m in exp.methods}
    t0 = time.perf_counter()
    extra = run_all([(m, chosen[m], s) for m in exp.methods for s in range(1, exp.seeds)])
    walls["further seeds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    with progress.stage("selectivity", 1):
        sel = selectivity(out, exp, chosen)
    walls["selectivity"] = round(time.perf_counter() - t0, 1)
    return write_outputs(out, exp, tuning + extra, chosen, sel, walls, started)
