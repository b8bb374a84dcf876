"""The strategy world's first demo stages: build world → extract strategies → tokenizer + model →
warm-up → held-out evaluation, everything written under one output folder.

    python -m sgpo.world.pipeline --out runs/world [--quick] [--seed 0] [--overwrite]

Output folder:

    config.json            the full configuration of the run (a rerun must match it)
    world/oracle/<split>.jsonl   oracle records (strategy still empty)
    world/<split>.jsonl    records with extracted strategies (splits: heldout, train, warmup)
    tokenizer/             the world tokenizer (`AutoTokenizer.from_pretrained`)
    model-init/            the freshly initialised model (+ tokenizer)
    warmup-state/state.pt  the warm-up's resumable checkpoint
    warmup/                the warmed-up model (+ tokenizer): the start of GRPO / SGPO
    warmup.json            held-out accuracy after warm-up, per family, and wall times

Every stage writes its output atomically and is skipped when its output is already there, so a rerun
after an interruption resumes (the warm-up from its last checkpoint); a folder holding a run of another
configuration is refused, never mixed. For a seed the numbers are the same on every rerun on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import read_rows, write_json, write_rows
from sgpo.world.generate import SPLITS, WorldSpec, build_world, write_world
from sgpo.world.model import ModelSpec
from sgpo.world.warmup import WarmupConfig

CONFIG_FILE = "config.json"
RESULTS_FILE = "warmup.json"


@dataclass(frozen=True)
class WorldRunConfig:
    """Everything that determines the numbers of a run."""

    seed: int = 0
    quick: bool = False
    world: WorldSpec = field(default_factory=WorldSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    tokenizer_vocab_size: int = 640
    tokenizer_corpus_per_family: int = 100  # warm-up records per family the tokenizer is trained on
    eval_max_new_tokens: int = 64
    eval_batch_size: int = 128

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["world"] = {"per_family": dict(self.world.per_family), "families": self.world.families and list(self.world.families)}
        d["warmup"] = self.warmup.to_dict()
        return d


def make_config(seed: int = 0, quick: bool = False) -> WorldRunConfig:
    """The full setting, or the quick one (a smaller world and model, fewer steps; well under a minute)."""
    if not quick:
        return WorldRunConfig(seed=seed, warmup=WarmupConfig(seed=seed))
    return WorldRunConfig(
        seed=seed,
        quick=True,
        world=WorldSpec(per_family={"heldout": 20, "train": 16, "warmup": 300}),
        model=ModelSpec(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
        warmup=WarmupConfig(seed=seed, steps=300, batch_size=16, learning_rate=4e-3, warmup_steps=25, save_every=100),
        eval_batch_size=120,
    )


# -- progress ------------------------------------------------------------------------------------
class Progress:
    """Rich progress bars, one per stage (`stage(name, total)` yields an `advance(done)` callback)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bars = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            self._bars = RichProgress(
                TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                transient=False,
            )
            self._bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.__exit__(*exc)

    @contextmanager
    def stage(self, name: str, total: int = 1):
        if self._bars is None:
            yield lambda done: None
            return
        task = self._bars.add_task(name, total=total)
        yield lambda done: self._bars.update(task, completed=done)
        self._bars.update(task, completed=total)


# -- stages --------------------------------------------------------------------------------------
def _atomic_dir(final: Path, write: Callable[[Path], Any]) -> Path:
    """Write a folder under a temporary name, then rename it into place."""
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
        _atomic_dir(folder, lambda tmp: write_world(tmp, build_world(cfg.seed, cfg.world)))
    return {s: read_rows(folder / f"{s}.jsonl") for s in SPLITS}


def stage_extract(out: Path, world: dict[str, list[dict]], advance=lambda done: None) -> dict[str, list[dict]]:
    """Strategies extracted from the oracle responses in `world/<split>.jsonl`, through the same
    pipeline a real run uses (`sgpo.strategies.pipeline.extract_strategies`: schema, leak filter,
    result cache) with the world's rule-based `WorldExtractor` as the extractor."""
    from sgpo.strategies.base import ExtractionError
    from sgpo.strategies.pipeline import ExtractionConfig, extract_strategies
    from sgpo.world.extractor import WorldExtractor

    result = {}
    for i, split in enumerate(SPLITS):
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
        _atomic_dir(tok_dir, lambda tmp: tok.save_pretrained(str(tmp)))
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if not model_dir.exists():
        model = build_model(tokenizer, cfg.model, seed=cfg.seed)
        _atomic_dir(model_dir, lambda tmp: save_model(model, tokenizer, tmp))
    return model_dir


def stage_warmup(out: Path, cfg: WorldRunConfig, world: dict[str, list[dict]], advance=lambda done: None) -> dict:
    """Warm-up from `model-init/` to `warmup/` (resumable through `warmup-state/`)."""
    from sgpo.world.model import load_model, save_model
    from sgpo.world.warmup import warmup

    final = out / "warmup"
    state_dir = out / "warmup-state"
    if final.exists():
        advance(cfg.warmup.steps)
        saved = json.loads((final / "warmup_losses.json").read_text())
        return {k: saved[k] for k in ("first_loss", "last_loss", "steps")}
    model, tokenizer = load_model(out / "model-init")
    losses = warmup(model, tokenizer, world["warmup"], cfg.warmup, state_dir=state_dir, on_step=lambda s, _: advance(s))
    summary = {"first_loss": losses[0], "last_loss": losses[-1], "steps": len(losses)}

    def write(tmp: Path) -> None:
        save_model(model, tokenizer, tmp)
        (tmp / "warmup_losses.json").write_text(json.dumps({**summary, "losses": losses}))

    _atomic_dir(final, write)
    return summary


def stage_eval(out: Path, cfg: WorldRunConfig, world: dict[str, list[dict]], advance=lambda done: None) -> dict:
    """Held-out accuracy (greedy, autonomous and guided) of the model in `warmup/`, and its size."""
    from sgpo.world.evaluate import heldout_accuracy
    from sgpo.world.model import load_model, num_parameters

    model, tokenizer = load_model(out / "warmup")
    result = heldout_accuracy(
        model,
        tokenizer,
        world["heldout"],
        max_new_tokens=cfg.eval_max_new_tokens,
        batch_size=cfg.eval_batch_size,
        on_progress=lambda done, total: advance(done),
    )
    return {**result, "num_parameters": num_parameters(model)}


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
        previous = json.loads(cfg_path.read_text())
        if previous != cfg.to_dict():
            raise OutputDirError(
                f"{out}: holds a run of another configuration ({cfg_path}); pass --overwrite to replace it"
            )
    out.mkdir(parents=True, exist_ok=True)
    if not cfg_path.exists():
        write_json(cfg_path, cfg.to_dict())
    return out


def set_determinism(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def run_world_stages(
    out: str | Path, cfg: WorldRunConfig, *, overwrite: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """Run (or resume) every stage; returns the content written to `warmup.json`.

    `progress` is any object with a `stage(name, total)` context manager yielding an `advance(done)`
    callback (`Progress()` draws rich bars; the default draws nothing).
    """
    out = prepare_out(out, cfg, overwrite)
    set_determinism(cfg.seed)
    progress = progress or Progress(enabled=False)
    walls: dict[str, float] = {}
    t_all = time.perf_counter()

    def timed(name: str, fn, *args, total: int = 1, **kwargs):
        t0 = time.perf_counter()
        with progress.stage(name, total) as advance:
            result = fn(*args, advance=advance, **kwargs)
        walls[name] = round(time.perf_counter() - t0, 2)
        return result

    oracle = timed("build world", stage_world, out, cfg)
    world = timed("extract strategies", stage_extract, out, oracle, total=len(SPLITS))
    timed("tokenizer + model", stage_model, out, cfg, world)
    losses = timed("warm-up", stage_warmup, out, cfg, world, total=cfg.warmup.steps)
    heldout = timed("held-out eval", stage_eval, out, cfg, world, total=2 * len(world["heldout"]))
    walls["total"] = round(time.perf_counter() - t_all, 2)
    num_parameters = heldout.pop("num_parameters")
    results = {
        "seed": cfg.seed,
        "quick": cfg.quick,
        "heldout": heldout,
        "warmup_loss": losses,
        "num_parameters": num_parameters,
        "wall_seconds": walls,
    }
    write_json(out / RESULTS_FILE, results)
    return results


def format_table(results: dict[str, Any]) -> str:
    """Held-out accuracy per family, as plain text."""
    rows = [("family", "n", "auto", "guided", "gap")]
    for fam, r in results["heldout"]["per_family"].items():
        rows.append((fam, str(r["n"]), f"{r['auto']:.3f}", f"{r['guided']:.3f}", f"{r['gap']:+.3f}"))
    h = results["heldout"]
    rows.append(("all", str(h["n"]), f"{h['auto']:.3f}", f"{h['guided']:.3f}", f"{h['gap']:+.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sgpo.world.pipeline",
        description="Build the strategy world, extract strategies, build the tokenizer and tiny model, "
        "warm it up and evaluate it on held-out problems.",
    )
    parser.add_argument("--out", required=True, help="output folder (created; see the module doc for its layout)")
    parser.add_argument("--quick", action="store_true", help="a smaller world and model and fewer warm-up steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, the model and the warm-up (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace whatever the output folder holds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars only
    cfg = make_config(args.seed, args.quick)
    try:
        with Progress(enabled=not args.no_progress) as progress:
            results = run_world_stages(args.out, cfg, overwrite=args.overwrite, progress=progress)
    except OutputDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(f"wall seconds: {json.dumps(results['wall_seconds'])}")
    print(f"written to {Path(args.out) / RESULTS_FILE}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
