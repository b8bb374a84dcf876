"""An experiment's records: the small files of its folder, kept where they outlive the machine.

    sgpo experiment --config experiments/world_v2_9.yaml --out runs/world-v2.9 --sync-records experiments/records/world-v2.9

A full experiment runs for many hours and its folder holds a model per run (megabytes each); a machine
that is lent by the session, or a cluster job with a time limit, can lose the folder before the
experiment ends. The records are what the results are computed from, without the models (kilobytes
per run), in a folder that can be committed with the code:

    experiment.json, gate.json, gate.md, gate/<size>/warmup.json
    setup*/eval/*.json                     the warm-ups' evaluations (a check, never restored)
    runs*/<method>/lr=<lr>,seed=<s>/       run.json and metrics.jsonl of each finished run
    selectivity.json, results.json, results.md, plots/*.png

`sync_records` copies both ways: what the output folder has goes into the records (a run.json
evaluated in full is never replaced by one evaluated on the validation split only), and what the
records have that the output folder lacks goes into it, so an experiment resumes on another machine
from its records: a finished run is read back, not trained again. A run whose model is needed (a
chosen tuning run to evaluate further, a seed-0 run for selectivity) is trained again and kept only if
it reproduces its record (`sgpo.world.experiment.check_reproduced`). The warm-ups' evaluations are
never restored: the world and warm-up are built again and the sync checks that their evaluations are
the records' (`NotReproducedError` otherwise), so records and new runs are never mixed across a
machine that computes other numbers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from sgpo.checkpoints import OutputDirError
from sgpo.world.experiment import EXPERIMENT_FILE, ExperimentConfig, NotReproducedError, resumable
from sgpo.world.methods import RUN_FILE

RUN_FILES = (RUN_FILE, "metrics.jsonl")  # what a finished run's record keeps (not its model)
TOP_FILES = (EXPERIMENT_FILE, "gate.json", "gate.md", "selectivity.json", "results.json", "results.md")
CHECKED = "setup*/eval/*.json"  # the warm-ups' evaluations: compared, never restored


def record_files(folder: Path) -> Iterator[Path]:
    """The record files under `folder` (an output folder or a records folder), relative to it."""
    for name in TOP_FILES:
        if (folder / name).is_file():
            yield Path(name)
    for pattern in ("gate/*/warmup.json", CHECKED, "plots/*.png"):
        yield from sorted(p.relative_to(folder) for p in folder.glob(pattern) if p.is_file())
    for run in sorted(folder.glob(f"runs*/*/*/{RUN_FILE}")):
        if run.parent.name.startswith("lr=") and "." not in run.parent.name.rsplit("seed=", 1)[-1]:
            # a finished run's folder only (not `<run>.tmp` or `<run>.retrained`, being written)
            yield from (p.relative_to(folder) for p in (run.parent / n for n in RUN_FILES) if p.is_file())


def _evaluated_in_full(path: Path) -> bool:
    return "test" in json.loads(path.read_text())


def _same_numbers(a: Path, b: Path) -> bool:
    """Whether two evaluation files hold the same numbers (their timings aside)."""

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "seconds" not in k}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return strip(json.loads(a.read_text())) == strip(json.loads(b.read_text()))


def sync_records(out: str | Path, records: str | Path, exp: ExperimentConfig) -> dict[str, int]:
    """Copy the record files (module doc) from output folder `out` into `records` and those `out`
    lacks from `records` into it. Nothing is copied when either folder holds an experiment that cannot
    go on under `exp` (`OutputDirError`) or a warm-up evaluation of `out` differs from the records'
    (`NotReproducedError`). Returns {"saved": n, "restored": n, "runs": finished runs in the records}."""
    out, records = Path(out), Path(records)
    mine_exp = json.loads(json.dumps(exp.to_dict()))
    for folder in (out, records):
        if (folder / EXPERIMENT_FILE).is_file() and not resumable(json.loads((folder / EXPERIMENT_FILE).read_text()), mine_exp):
            raise OutputDirError(f"{folder / EXPERIMENT_FILE}: holds an experiment of another configuration than --config's")
    mine, kept = set(record_files(out)), set(record_files(records))
    for rel in sorted(mine & kept):
        if rel.match(CHECKED) and not _same_numbers(out / rel, records / rel):
            raise NotReproducedError(
                f"{out / rel}: the warm-up's evaluation differs from the records' ({records / rel}): this machine "
                "builds another world or warm-up, so its runs cannot join the recorded ones"
            )
    saved = restored = 0
    for rel in sorted(mine):
        src, dst = out / rel, records / rel
        if dst.is_file() and src.read_bytes() == dst.read_bytes():
            continue
        if rel.name == RUN_FILE and dst.is_file() and _evaluated_in_full(dst) and not _evaluated_in_full(src):
            shutil.copyfile(dst, src)  # the records' run was evaluated further (its model is not here)
            restored += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        saved += 1
    for rel in sorted(kept - mine):
        if rel.match(CHECKED):
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(records / rel, out / rel)
        restored += 1
    runs = sum(1 for rel in record_files(records) if rel.name == RUN_FILE)
    return {"saved": saved, "restored": restored, "runs": runs}
