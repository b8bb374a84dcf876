"""Training-data variants of the strategy world (`sgpo.world.train_data`) and the library experiment
(experiments/strategy_library.yaml): each variant's file holds the intended strategies, and each
method trains on its variant's file (read from what the trainer itself logged)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sgpo.checkpoints import OutputDirError
from sgpo.data import read_rows
from sgpo.world.experiment import load_config, prepare_experiment
from sgpo.world.methods import METHODS, run_dir
from sgpo.world.pipeline import prepare_out
from sgpo.world.train_data import half_split, variant_file, write_variants

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "strategy_library.yaml"


@pytest.fixture(scope="module")
def quick_world(tmp_path_factory):
    """The quick experiment's world (extracted strategies, no model), with its variants written."""
    from sgpo.world.pipeline import stage_extract, stage_world

    exp = load_config(CONFIG, quick=True)
    out = tmp_path_factory.mktemp("library-world")
    stage_extract(out, stage_world(out, exp.setup))
    write_variants(out / "world", exp.setup.seed)
    return out / "world", exp


def sources(rows):
    return Counter(r.get("strategy_source") for r in rows)


def test_variant_files_have_the_intended_strategy_sources(quick_world):
    world, exp = quick_world
    train = read_rows(world / "train.jsonl")
    n = len(train)
    assert n == 24 and all(r["strategy"] for r in train)
    own = read_rows(variant_file(world, "own"))
    half = read_rows(variant_file(world, "half"))
    retrieved = read_rows(variant_file(world, "half_retrieved"))
    # own: every problem with its own strategy; half: half own, half none; half_retrieved: half own, half retrieved
    assert [r["strategy"] for r in own] == [r["strategy"] for r in train] and set(sources(own)) <= {None, "own"}
    assert sources(half) == {"own": n // 2, None: n // 2}
    assert sources(retrieved) == {"own": n // 2, "retrieved": n // 2}
    assert [r["id"] for r in half] == [r["id"] for r in retrieved] == [r["id"] for r in train]
    # the stripped half is `half_split`'s, drawn over several families, and it lost its strong response
    stripped, kept = half_split(n, exp.setup.seed)
    assert [i for i, r in enumerate(half) if r["strategy_source"] is None] == stripped
    assert len({train[i]["family"] for i in stripped}) > 1
    assert all(half[i]["strategy"] is None and "response" not in half[i] for i in stripped)
    # the kept half keeps its own strategy in both; the other half's comes from a library of the kept
    # half only (at this size not always the right family's: a paraphrase may be missing from the library)
    assert all(half[i]["strategy"] == retrieved[i]["strategy"] == train[i]["strategy"] for i in kept)
    assert all(retrieved[i]["strategy"] in {train[k]["strategy"] for k in kept} for i in stripped)
    assert {retrieved[i]["strategy_match"] for i in stripped} <= {train[k]["id"] for k in kept}
    # written once: a second call leaves the files alone
    stamp = variant_file(world, "half").stat().st_mtime_ns
    write_variants(world, exp.setup.seed)
    assert variant_file(world, "half").stat().st_mtime_ns == stamp


def test_library_config_compares_the_variants_under_one_protocol():
    exp = load_config(CONFIG)
    assert [METHODS[m].data for m in exp.methods] == ["own", "half", "half_retrieved"]
    assert {METHODS[m].base for m in exp.methods} == {"sgpo"} and not any(METHODS[m].overrides for m in exp.methods)
    assert exp.references() == {"sgpo_half": "sgpo_half_retrieved", "sgpo_half_retrieved": "sgpo"}
    # the world, warm-up and budget of experiments/world_v1.yaml, so its setup/ can be reused
    world = load_config(ROOT / "experiments" / "world_v1.yaml")
    assert exp.setup == world.setup and exp.seeds >= 3 and set(exp.learning_rates) <= set(world.learning_rates)


@pytest.mark.slow
def test_quick_library_experiment_trains_each_method_on_its_variant(tmp_path):
    from test_experiment import sgpo

    out = tmp_path / "run"
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--seeds", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    exp = load_config(CONFIG, quick=True, seeds=1)
    world = out / "setup" / "world"
    logged = {}
    for m in exp.methods:
        folder = run_dir(out, m, exp.learning_rates[0], 0)
        run = json.loads((folder / "run.json").read_text())
        assert out / run["train_file"] == variant_file(world, METHODS[m].data)
        steps = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        steps = [s for s in steps if "problems/without_strategy_frac" in s]
        assert len(steps) == exp.setup.train.max_steps
        logged[m] = (
            {k.rpartition("/")[2] for s in steps for k in s if k.startswith("accuracy/guided/")},
            sum(s["problems/without_strategy_frac"] for s in steps),
        )
    # what the trainer saw: no strategy_source column and every problem guided; own strategies and
    # problems without one; own and retrieved strategies and every problem guided
    assert logged["sgpo"] == (set(), 0.0)
    assert logged["sgpo_half"][0] == {"own"} and logged["sgpo_half"][1] > 0
    assert logged["sgpo_half_retrieved"] == ({"own", "retrieved"}, 0.0)
    results = json.loads((out / "results.json").read_text())
    assert {m: c["reference"] for m, c in results["comparisons"].items()} == exp.references()
    assert "| sgpo_half | " in (out / "results.md").read_text() and "sgpo_half_retrieved − sgpo_half: " in proc.stdout


def test_an_out_folder_holding_only_a_copied_setup_is_a_start(tmp_path):
    exp = load_config(CONFIG, quick=True)
    out = tmp_path / "out"
    prepare_out(out / "setup", exp.setup)  # as another experiment of the same world leaves it
    prepare_experiment(out, exp)
    assert (out / "experiment.json").exists()
    # another world's setup is refused by the pipeline, before any stage runs
    other = tmp_path / "other"
    prepare_out(other / "setup", load_config(ROOT / "experiments" / "world_v1.yaml").setup)
    prepare_experiment(other, exp)
    with pytest.raises(OutputDirError, match="holds a run of another configuration"):
        prepare_out(other / "setup", exp.setup)
    # anything else beside it is not
    stray = tmp_path / "stray"
    (stray / "setup").mkdir(parents=True)
    (stray / "notes.txt").write_text("x")
    with pytest.raises(OutputDirError, match="holds other files"):
        prepare_experiment(stray, exp)
