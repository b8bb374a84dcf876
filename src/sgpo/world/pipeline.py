"""The strategy world's pipeline; `sgpo demo` is this pipeline run to the end.

    build world → extract strategies → tokenizer + model → warm-up (SFT) → evaluate warmup
      → train GRPO (8 autonomous rollouts per problem) → evaluate grpo   ┐ same warm-up start, same
      → train SGPO (4 autonomous + 4 guided)           → evaluate sgpo   ┘ problems, steps, rollouts
      → table, results.json, per_family.json, plots/*.png, <method>/report/index.html

    sgpo demo --out runs/demo [--quick] [--seed 0] [--overwrite]           # every stage
    python -m sgpo.world.pipeline --out runs/world [--quick] [--seed 0]     # up to `evaluate warmup`

Output folder:

    config.json                  the full configuration of the run (a rerun must match it)
    world/oracle/<split>.jsonl   oracle records (strategy still empty)
    world/<split>.jsonl          records with extracted strategies (splits: heldout, train, warmup)
    tokenizer/  model-init/      the world tokenizer; the freshly initialised model (+ tokenizer)
    warmup-state/state.pt        the warm-up's resumable checkpoint
    warmup/                      the warmed-up model (+ tokenizer): the start of GRPO and SGPO
    eval/<model>.json            held-out accuracy of warmup / grpo / sgpo, overall and per family
    warmup.json                  the warm-up's held-out accuracy, loss, size and stage wall times
    grpo/  sgpo/                 the trained models, their metrics.jsonl, tensorboard logs, report/
    results.json, per_family.json, plots/   the comparison (`sgpo.world.results`)

Every stage writes its output atomically and is skipped when that output is already there, so a
rerun after an interruption resumes (the warm-up from its last checkpoint); a folder holding a run of
another configuration is refused, never mixed.

Every process computes with `threads` (1) torch threads, whatever the machine's core count: the
warm-up runs data-parallel in `warmup_processes` (2) processes, GRPO and SGPO side by side. So the
numbers depend only on the seed, the configuration, the installed versions (`requirements/lock.txt`)
and the processor's instruction set (`numerics()`; docs/strategy-world.md, "Determinism").
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import read_rows, write_json
from sgpo.world.generate import WorldSpec, build_world, write_world
from sgpo.world.model import ModelSpec
from sgpo.world.progress import StageProgress
from sgpo.world.warmup import WarmupConfig

CONFIG_FILE = "config.json"
WARMUP_FILE = "warmup.json"
METHODS = ("grpo", "sgpo")


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
    # The sweep and what SGPO does at each rate: README, "The demo".
    learning_rate: float = 1e-5
    temperature: float = 1.0
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
                extra = dict(mix_strong_responses=True, strong_response_column="response", policy_shaping_gamma=0.1, loss_type="dr_grpo")
        elif method == "sgpo":
            rollout = dict(num_generations=half, num_guided_generations=self.rollouts_per_problem - half, distill_coef=self.distill_coef)
        else:
            raise ValueError(f"unknown method {method!r} (grpo, sgpo, luffy)")
        return dict(
            per_device_train_batch_size=self.problems_per_step,
            max_steps=self.max_steps,
            max_completion_length=self.max_completion_length,
            learning_rate=self.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            temperature=self.temperature,
            loss_type=self.loss_type,
            instance_weighting=self.instance_weighting,
            seed=self.seed,
            data_seed=self.seed,
            **rollout,
        ) | extra


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
    # torch threads of every process; fixed rather than the machine's core count, because the
    # summation order in matrix products, and so the last bits of every number, depend on it
    threads: int = 1
    warmup_processes: int = 2  # the warm-up runs data-parallel in this many processes (warmup.py)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["world"] = {"per_family": dict(self.world.per_family), "families": self.world.families and list(self.world.families)}
        d["warmup"] = self.warmup.to_dict()
        return d


def make_config(seed: int = 0, quick: bool = False) -> WorldRunConfig:
    """The full setting, or the quick one (a smaller world and model, fewer steps: a smoke test)."""
    if not quick:
        return WorldRunConfig(seed=seed, warmup=WarmupConfig(seed=seed), train=TrainSettings(seed=seed))
    return WorldRunConfig(
        seed=seed,
        quick=True,
        world=WorldSpec(per_family={"heldout": 20, "train": 16, "warmup": 300}),
        model=ModelSpec(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
        warmup=WarmupConfig(seed=seed, steps=300, batch_size=16, learning_rate=4e-3, warmup_steps=25, save_every=100),
        train=TrainSettings(max_steps=6, problems_per_step=4, seed=seed),
        eval_batch_size=120,
    )


# -- stages: each takes `advance(done)` and skips itself when its output is there ---------------------
def atomic_dir(final: Path, write: Callable[[Path], Any]) -> Path:
    """Write a folder under a temporary name (`<final>.tmp`, emptied first), then rename it into place."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def stage_world(out: Path, cfg: WorldRunConfig, advance=lambda done: None) -> dict[str, list[dict]]:
    """Oracle records of every split (strategy still empty), in `world/oracle/`."""
    folder = out / "world" / "oracle"
    if not folder.exists():
        atomic_dir(folder, lambda tmp: write_world(tmp, build_world(cfg.seed, cfg.world)))
    return {s: read_rows(folder / f"{s}.jsonl") for s in cfg.world.splits}


def stage_extract(out: Path, world: dict[str, list[dict]], advance=lambda done: None) -> dict[str, list[dict]]:
    """Strategies extracted from the oracle responses in `world/<split>.jsonl`, through the same
    pipeline a real run uses (`sgpo.strategies.pipeline.extract_strategies`: schema, leak filter,
    result cache) with the world's rule-based `WorldExtractor` as the extractor."""
    from sgpo.strategies.base import ExtractionError
    from sgpo.strategies.pipeline import ExtractionConfig, extract_strategies
    from sgpo.world.extractor import WorldExtractor

    result = {}
    for i, split in enumerate(world):
        path = out / "world" / f"{split}.jsonl"
        if not path.exists():
            summary = extract_strategies(
                out / "world" / "oracle" / f"{split}.jsonl", path, WorldExtractor(), ExtractionConfig(concurrency=1),
                progress=False, cache=out / "world" / "extraction-cache.sqlite",
            )
            if summary.ok != summary.rows:
                path.unlink(missing_ok=True)
                raise ExtractionError("world_extraction", f"{split}: {summary.format()}")
        result[split] = read_rows(path)
        advance(i + 1)
    return result


def stage_model(out: Path, cfg: WorldRunConfig, world: dict[str, list[dict]], advance=lambda done: None) -> Path:
    """The tokenizer (`tokenizer/`) and the initial model (`model-init/`), built once, loaded by path."""
    from transformers import AutoTokenizer

    from sgpo.world.model import build_model, save_model
    from sgpo.world.prompt import WORLD_PROMPT_FORMAT
    from sgpo.world.tokenizer import build_tokenizer, world_texts

    tok_dir, model_dir = out / "tokenizer", out / "model-init"
    if not tok_dir.exists():
        per_family: dict[str, int] = {}
        corpus = []
        for r in world["warmup"]:
            if per_family.get(r["family"], 0) < cfg.tokenizer_corpus_per_family:
                per_family[r["family"]] = per_family.get(r["family"], 0) + 1
                corpus.append(r)
        tok = build_tokenizer(world_texts(corpus, WORLD_PROMPT_FORMAT), cfg.tokenizer_vocab_size)
        atomic_dir(tok_dir, lambda tmp: tok.save_pretrained(str(tmp)))
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if not model_dir.exists():
        model = build_model(tokenizer, cfg.model, seed=cfg.seed)
        atomic_dir(model_dir, lambda tmp: save_model(model, tokenizer, tmp))
    return model_dir


def stage_warmup(out: Path, cfg: WorldRunConfig, world: dict[str, list[dict]], advance=lambda done: None) -> dict:
    """Warm-up from `model-init/` to `warmup/` (resumable through `warmup-state/`), in this process or,
    with `cfg.warmup_processes` > 1, data-parallel in that many worker processes."""
    final = out / "warmup"
    if final.exists():
        advance(cfg.warmup.steps)
        saved = json.loads((final / "warmup_losses.json").read_text())
        return {k: saved[k] for k in ("first_loss", "last_loss", "steps")}
    n = cfg.warmup_processes
    rendezvous = (out / "warmup-state" / "rendezvous").resolve()  # a file:// URL needs an absolute path

    def write(tmp: Path) -> None:
        if n == 1:
            warmup_process(out, cfg, tmp, on_step=advance)
            return
        rendezvous.parent.mkdir(parents=True, exist_ok=True)
        rendezvous.unlink(missing_ok=True)  # the file store must start empty
        calls = [(warmup_process, (out, cfg, tmp), dict(rank=r, rendezvous=rendezvous)) for r in range(n)]
        run_in_workers(calls, lambda kind, name, done: advance(done) if kind == "update" else None)

    atomic_dir(final, write)
    rendezvous.unlink(missing_ok=True)
    saved = json.loads((final / "warmup_losses.json").read_text())
    return {k: saved[k] for k in ("first_loss", "last_loss", "steps")}


def warmup_process(out: Path, cfg: WorldRunConfig, save_to: Path, *, rank: int = 0, rendezvous: Path | None = None,
                   on_step=lambda done: None, progress=None) -> None:
    """One process of the warm-up (`rank` of `cfg.warmup_processes`, meeting the others through the
    `rendezvous` file): loads `model-init/`, trains, and (rank 0) saves the model and its losses to
    `save_to`. In a worker, `progress` (`_QueueProgress`) carries rank 0's steps to the parent."""
    from sgpo.world.model import load_model, save_model
    from sgpo.world.warmup import warmup

    set_determinism(cfg.seed, cfg.threads)
    n = cfg.warmup_processes
    if progress is not None:
        on_step = lambda done: progress.update("warm-up", done)  # noqa: E731
    if n > 1:
        import torch.distributed as dist

        # a process that fails takes the others down within the timeout instead of leaving them waiting
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=n,
                                timeout=datetime.timedelta(minutes=5))
    try:
        model, tokenizer = load_model(out / "model-init")
        losses = warmup(model, tokenizer, read_rows(out / "world" / "warmup.jsonl"), cfg.warmup, state_dir=out / "warmup-state",
                        on_step=lambda step, _: on_step(step) if rank == 0 else None, rank=rank, world_size=n)
    finally:
        if n > 1:
            dist.destroy_process_group()
    if rank == 0:
        save_model(model, tokenizer, save_to)
        summary = {"first_loss": losses[0], "last_loss": losses[-1], "steps": len(losses)}
        (save_to / "warmup_losses.json").write_text(json.dumps({**summary, "losses": losses}))


def stage_train(out: Path, cfg: WorldRunConfig, method: str, advance=lambda done: None) -> Path:
    """Train `method` ("grpo" or "sgpo") from `warmup/` on `world/train.jsonl` into `<method>/`
    (`train_rl`)."""
    final = out / method
    if final.exists():
        return final
    return atomic_dir(final, lambda tmp: train_rl(out / "warmup", out / "world" / "train.jsonl", tmp,
                                                  cfg.train.sgpo_config_kwargs(method), advance))


def train_rl(start: Path, train_file: Path, dest: Path, config_kwargs: dict[str, Any], advance=lambda done: None) -> None:
    """One `SGPOTrainer` run on the world's prompt format from the model in `start` on `train_file`,
    with `SGPOConfig(**config_kwargs)` (`TrainSettings.sgpo_config_kwargs`), saved to `dest` (its
    output folder: metrics.jsonl, tensorboard logs, the model). Callers train into a temporary folder,
    emptied first, so the trainer never finds a previous run there (an interrupted one restarts from
    `start`; the folder is renamed into place only when the model is saved: `atomic_dir`)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from sgpo.config import SGPOConfig
    from sgpo.trainer import SGPOTrainer
    from sgpo.world.prompt import WORLD_PROMPT_FORMAT

    class _Advance(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            advance(state.global_step)

    fmt = WORLD_PROMPT_FORMAT
    args = SGPOConfig(
        output_dir=str(dest),
        prompt_template=fmt.template,
        guided_prompt_template=fmt.guided_template,
        system_prompt=fmt.system_prompt,
        use_chat_template=fmt.use_chat_template,
        max_prompt_length=None,
        reward_funcs=["accuracy"],
        logging_steps=1,
        save_strategy="no",
        report_to="tensorboard",
        disable_tqdm=True,
        use_cpu=True,
        **config_kwargs,
    )
    trainer = SGPOTrainer(str(start), args, train_dataset=str(train_file), callbacks=[_Advance()])
    trainer.remove_callback(PrinterCallback)  # the progress lines and metrics.jsonl say it all
    trainer.train()
    trainer.save_model(str(dest))


def stage_eval(out: Path, cfg: WorldRunConfig, name: str, advance=lambda done: None) -> dict[str, Any]:
    """Greedy held-out accuracy of the model in `out/<name>/`, autonomous and guided, overall and per
    family (`sgpo.world.evaluate.heldout_accuracy`), kept in `eval/<name>.json`."""
    path = out / "eval" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    from sgpo.world.evaluate import heldout_accuracy
    from sgpo.world.model import load_model

    model, tokenizer = load_model(out / name)
    result = heldout_accuracy(
        model, tokenizer, read_rows(out / "world" / "heldout.jsonl"),
        max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size, on_progress=lambda done, total: advance(done),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


# -- the whole run -------------------------------------------------------------------------------
class OutputDirError(ValueError):
    """The output folder holds something this run must not overwrite or mix with."""


def prepare_out(out: str | Path, cfg: WorldRunConfig, overwrite: bool = False) -> Path:
    """Create `out`, or check that it holds a (partial) run of the same config; with `overwrite`, start clean."""
    out = Path(out)
    cfg_path = out / CONFIG_FILE
    if overwrite and out.exists():
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()):
        if not cfg_path.exists():
            raise OutputDirError(f"{out}: the folder holds other files; choose another --out or pass --overwrite")
        if json.loads(cfg_path.read_text()) != cfg.to_dict():
            raise OutputDirError(f"{out}: holds a run of another configuration ({cfg_path}); pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    if not cfg_path.exists():
        write_json(cfg_path, cfg.to_dict())
    return out


def set_determinism(seed: int, threads: int) -> dict[str, Any]:
    """Seed Python and torch, use deterministic kernels and `threads` torch threads (a matrix
    product's summation order, and so the last bits of every number, depend on the thread count).
    Returns what else the numbers depend on: versions and the CPU code path (`numerics`)."""
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)
    return numerics()


def numerics() -> dict[str, Any]:
    """The versions and CPU code path this process computes with: with the same seed, config and
    these values, a run gives the same numbers bit for bit (docs/strategy-world.md, "Determinism")."""
    import platform
    from importlib.metadata import version

    import torch

    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # ATen's kernels: AVX512, AVX2, ...
        "mkl_cbwr": os.environ.get("MKL_CBWR"),  # MKL's code path, unset: chosen per processor
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        **{pkg: version(pkg) for pkg in ("torch", "transformers", "tokenizers", "accelerate", "trl")},
    }


class _QueueProgress:
    """The `StageProgress` calls of a worker process, sent to the parent (`run_in_workers`)."""

    def __init__(self, queue):
        self.queue = queue

    def begin(self, name: str, total: int = 1) -> None:
        self.queue.put(("begin", name, total))

    def update(self, name: str, done: int) -> None:
        self.queue.put(("update", name, done))

    def end(self, name: str, finished: bool = True) -> None:
        self.queue.put(("end", name, finished))

    stage = StageProgress.stage


_worker_queue = None


def _init_worker(queue) -> None:
    global _worker_queue
    _worker_queue = queue


def _call_in_worker(fn, args, kwargs):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the parent shows the progress
    return fn(*args, **kwargs, progress=_QueueProgress(_worker_queue))


def run_in_workers(calls: Sequence[tuple[Callable, tuple, dict]], on_message: Callable[[str, str, Any], None],
                   processes: int | None = None) -> list[Any]:
    """`fn(*args, **kwargs, progress=...)` for each call at once, one fresh process each (spawned, so
    each sets its torch threads before anything is computed) — or, with `processes`, in that many
    processes, each taking the next call when it finishes one; returns their results in order. Their
    `progress.begin/update/end(name, x)` calls arrive here as `on_message(kind, name, x)`. An error
    in one is raised here, with the worker's traceback, once all have stopped."""
    import multiprocessing
    import queue as queue_lib
    from concurrent.futures import ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()

    def relay() -> None:
        while True:
            try:
                on_message(*messages.get(timeout=0.05))
            except queue_lib.Empty:
                return

    with ProcessPoolExecutor(processes or len(calls), mp_context=ctx, initializer=_init_worker, initargs=(messages,)) as pool:
        futures = [pool.submit(_call_in_worker, fn, args, kwargs) for fn, args, kwargs in calls]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.5)
            relay()
    relay()
    return [f.result() for f in futures]


def train_and_evaluate(out: Path, cfg: WorldRunConfig, method: str, *, progress) -> tuple[dict[str, Any], dict[str, float], dict]:
    """`stage_train` then `stage_eval` of `method`; returns the held-out accuracy, the two stages'
    wall seconds and the `numerics` they ran with."""
    numbers = set_determinism(cfg.train.seed, cfg.threads)
    walls = {}
    t0 = time.perf_counter()
    with progress.stage(f"train {method}", cfg.train.max_steps) as advance:
        stage_train(out, cfg, method, advance)
    walls[f"train {method}"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    with progress.stage(f"evaluate {method}", 2 * len(read_rows(out / "world" / "heldout.jsonl"))) as advance:
        heldout = stage_eval(out, cfg, method, advance)
    walls[f"evaluate {method}"] = round(time.perf_counter() - t0, 2)
    return heldout, walls, numbers


def run_pipeline(
    out: str | Path,
    cfg: WorldRunConfig,
    *,
    methods: Sequence[str] = METHODS,
    side_by_side: bool = True,
    overwrite: bool = False,
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """Run (or resume) the stages up to the warm-up's evaluation, then train and evaluate each of
    `methods` from the warm-up (`methods=()`: the world and the warm-up only) — all at once in worker
    processes (`side_by_side`), or one after the other in this one; the numbers are the same.
    Writes `warmup.json` and, with methods, the comparison (`sgpo.world.results.write_results`).

    Returns `{"seed", "quick", "methods": {model: held-out accuracy}, "warmup_loss", "num_parameters",
    "numerics": {model: numerics of the process(es) that made it}, "wall_seconds": {stage: seconds, "total": seconds}}`.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; methods: {', '.join(METHODS)}")
    out = prepare_out(out, cfg, overwrite)
    numbers = set_determinism(cfg.seed, cfg.threads)
    progress = progress or StageProgress(enabled=False)
    walls: dict[str, float] = {}
    t_all = time.perf_counter()

    def timed(name: str, fn, *args, total: int = 1):
        t0 = time.perf_counter()
        with progress.stage(name, total) as advance:
            result = fn(*args, advance=advance)
        walls[name] = round(time.perf_counter() - t0, 2)
        return result

    oracle = timed("build world", stage_world, out, cfg)
    world = timed("extract strategies", stage_extract, out, oracle, total=len(oracle))
    timed("tokenizer + model", stage_model, out, cfg, world)
    losses = timed("warm-up", stage_warmup, out, cfg, world, total=cfg.warmup.steps)
    heldout = {"warmup": timed("evaluate warmup", stage_eval, out, cfg, "warmup", total=2 * len(world["heldout"]))}
    from sgpo.world.model import load_model, num_parameters

    results = {"seed": cfg.seed, "quick": cfg.quick, "methods": heldout, "warmup_loss": losses,
               "num_parameters": num_parameters(load_model(out / "warmup")[0]), "numerics": {"warmup": numbers},
               "wall_seconds": walls}
    walls["total"] = round(time.perf_counter() - t_all, 2)
    write_json(out / WARMUP_FILE, {**{k: v for k, v in results.items() if k not in ("methods", "numerics")},
                                   "heldout": heldout["warmup"], "numerics": numbers})
    if not methods:
        return results
    t0 = time.perf_counter()
    if side_by_side and len(methods) > 1:
        calls = [(train_and_evaluate, (out, cfg, m), {}) for m in methods]
        runs = run_in_workers(calls, lambda kind, name, x: getattr(progress, kind)(name, x))
    else:
        runs = [train_and_evaluate(out, cfg, m, progress=progress) for m in methods]
    for method, (result, run_walls, run_numbers) in zip(methods, runs):
        heldout[method] = result
        walls.update(run_walls)
        results["numerics"][method] = run_numbers
    walls["train + evaluate"] = round(time.perf_counter() - t0, 2)
    from sgpo.world.results import write_results

    timed("plots + reports", lambda advance: write_results(out, results, started=t_all))
    walls["total"] = round(time.perf_counter() - t_all, 2)
    return results


def main(argv: list[str] | None = None) -> int:
    """`python -m sgpo.world.pipeline`: the stages up to the warm-up's evaluation (`sgpo demo`'s options)."""
    from sgpo.commands.demo import run_command

    return run_command(argv, prog="python -m sgpo.world.pipeline", methods=())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
