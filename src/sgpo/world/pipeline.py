"""The strategy world's pipeline; `sgpo demo` is this pipeline run to the end.

    build world → extract strategies → tokenizer + model → warm-up (SFT) → evaluate warmup
      → train GRPO (8 autonomous rollouts per problem) → evaluate grpo   ┐ same warm-up start, same
      → train SGPO (4 autonomous + 4 guided)           → evaluate sgpo   ┘ problems, steps, rollouts
      → table, results.json, per_family.json, plots/*.png, <method>/report/index.html

    sgpo demo --out runs/demo [--quick] [--seed 0] [--overwrite]            # every stage
    python -m sgpo.commands.world --out runs/world [--quick] [--seed 0]     # up to `evaluate warmup`

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
warm-up runs data-parallel in `warmup_processes` (2) processes, GRPO and SGPO side by side
(`sgpo.world.workers`). So the numbers depend only on the seed, the configuration
(`sgpo.world.settings`), the installed versions (`requirements/lock.txt`) and the processor's
instruction set (`numerics()`; docs/strategy-world.md, "Determinism").
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers import AutoTokenizer, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from sgpo.checkpoints import OutputDirError
from sgpo.config import SGPOConfig
from sgpo.data import atomic_dir, read_rows, write_json
from sgpo.strategies.base import ExtractionError
from sgpo.strategies.extraction import ExtractionConfig, extract_strategies
from sgpo.trainer import SGPOTrainer
from sgpo.world.evaluate import auto_and_guided, heldout_accuracy
from sgpo.world.extractor import WorldExtractor
from sgpo.world.families import families_named
from sgpo.world.generate import build_world, write_world
from sgpo.world.model import build_model, load_model, num_parameters, save_model
from sgpo.world.progress import StageProgress
from sgpo.world.prompt import WORLD_PROMPT_FORMAT
from sgpo.world.results import write_results
from sgpo.world.settings import RUN_CONFIG_FILE, WorldRunConfig
from sgpo.world.tokenizer import build_tokenizer, world_texts
from sgpo.world.warmup import warmup
from sgpo.world.workers import run_in_workers, set_determinism

WARMUP_FILE = "warmup.json"
DEMO_METHODS = ("grpo", "sgpo")  # what `sgpo demo` compares; the experiment's methods: `sgpo.world.methods`


# -- stages: each takes `advance(done)` and skips itself when its output is there ---------------------
def stage_world(out: Path, cfg: WorldRunConfig, advance=lambda done: None) -> dict[str, list[dict]]:
    """Oracle records of every split (strategy still empty), in `world/oracle/`."""
    folder = out / "world" / "oracle"
    if not folder.exists():
        atomic_dir(folder, lambda tmp: write_world(tmp, build_world(cfg.seed, cfg.world)))
    return {s: read_rows(folder / f"{s}.jsonl") for s in cfg.world.splits}


def stage_extract(out: Path, world: dict[str, list[dict]], advance=lambda done: None) -> dict[str, list[dict]]:
    """Strategies extracted from the oracle responses in `world/<split>.jsonl`, through the same
    pipeline a real run uses (`sgpo.strategies.extraction.extract_strategies`: schema, leak filter,
    result cache) with the world's rule-based `WorldExtractor` as the extractor."""
    result = {}
    for i, split in enumerate(world):
        path = out / "world" / f"{split}.jsonl"
        if not path.exists():
            summary = extract_strategies(
                out / "world" / "oracle" / f"{split}.jsonl",
                path,
                WorldExtractor(),
                ExtractionConfig(concurrency=1),
                progress=False,
                cache=out / "world" / "extraction-cache.sqlite",
            )
            if summary.ok != summary.rows:
                path.unlink(missing_ok=True)
                raise ExtractionError("world_extraction", f"{split}: {summary.format()}")
        result[split] = read_rows(path)
        advance(i + 1)
    return result


def stage_model(out: Path, cfg: WorldRunConfig, world: dict[str, list[dict]], advance=lambda done: None) -> Path:
    """The tokenizer (`tokenizer/`) and the initial model (`model-init/`), built once, loaded by path."""
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


def warmup_process(
    out: Path,
    cfg: WorldRunConfig,
    save_to: Path,
    *,
    rank: int = 0,
    rendezvous: Path | None = None,
    on_step=lambda done: None,
    progress=None,
) -> None:
    """One process of the warm-up (`rank` of `cfg.warmup_processes`, meeting the others through the
    `rendezvous` file): loads `model-init/`, trains, and (rank 0) saves the model and its losses to
    `save_to`. In a worker, `progress` (`_QueueProgress`) carries rank 0's steps to the parent."""
    set_determinism(cfg.seed, cfg.threads)
    n = cfg.warmup_processes
    if progress is not None:
        on_step = lambda done: progress.update("warm-up", done)  # noqa: E731
    if n > 1:
        # a process that fails takes the others down within the timeout instead of leaving them waiting
        dist.init_process_group(
            "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=n, timeout=datetime.timedelta(minutes=5)
        )
    try:
        model, tokenizer = load_model(out / "model-init")
        losses = warmup(
            model,
            tokenizer,
            read_rows(out / "world" / "warmup.jsonl"),
            cfg.warmup,
            state_dir=out / "warmup-state",
            on_step=lambda step, _: on_step(step) if rank == 0 else None,
            rank=rank,
            world_size=n,
            families=families_named(cfg.world.families),
        )
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
    return atomic_dir(
        final,
        lambda tmp: train_rl(out / "warmup", out / "world" / "train.jsonl", tmp, cfg.train.sgpo_config_kwargs(method), advance),
    )


def train_rl(start: Path, train_file: Path, dest: Path, config_kwargs: dict[str, Any], advance=lambda done: None) -> None:
    """One `SGPOTrainer` run on the world's prompt format from the model in `start` on `train_file`,
    with `SGPOConfig(**config_kwargs)` (`TrainSettings.sgpo_config_kwargs`), saved to `dest` (its
    output folder: metrics.jsonl, tensorboard logs, the model). Callers train into a temporary folder,
    emptied first, so the trainer never finds a previous run there (an interrupted one restarts from
    `start`; the folder is renamed into place only when the model is saved: `atomic_dir`)."""

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
    trainer = SGPOTrainer(str(start), args=args, train_dataset=str(train_file), callbacks=[_Advance()])
    trainer.remove_callback(PrinterCallback)  # the progress lines and metrics.jsonl say it all
    trainer.train()
    trainer.save_model(str(dest))


def stage_eval(out: Path, cfg: WorldRunConfig, name: str, advance=lambda done: None) -> dict[str, Any]:
    """Held-out accuracy of the model in `out/<name>/`, autonomous and guided, overall and per family
    (`sgpo.world.evaluate.auto_and_guided`: pass@1 over `cfg.eval_samples` samples, guided over
    `cfg.eval_guided_samples`; with sampling, the greedy autonomous accuracy beside), kept in `eval/<name>.json`."""
    path = out / "eval" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    model, tokenizer = load_model(out / name)
    rows = read_rows(out / "world" / "heldout.jsonl")
    common = dict(max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size)
    result = auto_and_guided(model, tokenizer, rows, samples=cfg.eval_samples, guided_samples=cfg.eval_guided_samples,
                             temperature=cfg.eval_temperature, on_progress=lambda done, total: advance(done), **common)  # fmt: skip
    result["auto_per_record"] = result.pop("correct")["auto"]  # for paired differences between models (results.py)
    if cfg.eval_samples > 1:  # greedy beside the sampled figure
        greedy = heldout_accuracy(model, tokenizer, rows, modes=("auto",), **common)
        result["greedy_auto"] = greedy["auto"]
        for family, r in greedy["per_family"].items():
            result["per_family"][family]["greedy_auto"] = r["auto"]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


# -- the whole run -------------------------------------------------------------------------------
def prepare_out(out: str | Path, cfg: WorldRunConfig, overwrite: bool = False) -> Path:
    """Create `out`, or check that it holds a (partial) run of the same config; with `overwrite`, start clean."""
    out = Path(out)
    cfg_path = out / RUN_CONFIG_FILE
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
    methods: Sequence[str] = DEMO_METHODS,
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
    unknown = [m for m in methods if m not in DEMO_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; methods: {', '.join(DEMO_METHODS)}")
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
    results = {
        "seed": cfg.seed,
        "quick": cfg.quick,
        "metric": cfg.metric(),
        "methods": heldout,
        "warmup_loss": losses,
        "num_parameters": num_parameters(load_model(out / "warmup")[0]),
        "numerics": {"warmup": numbers},
        "wall_seconds": walls,
    }
    walls["total"] = round(time.perf_counter() - t_all, 2)
    write_json(
        out / WARMUP_FILE,
        {
            **{k: v for k, v in results.items() if k not in ("methods", "numerics")},
            "heldout": heldout["warmup"],
            "numerics": numbers,
        },
    )
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
    timed("plots + reports", lambda advance: write_results(out, results, started=t_all))
    walls["total"] = round(time.perf_counter() - t_all, 2)
    return results
