"""`sgpo experiment`: the quick experiment end to end through the real CLI (every method, every seed,
chosen rates from the grid, equal budgets, intervals, resume), its statistics, and its config errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sgpo.checkpoints import OutputDirError
from sgpo.world.experiment import ConfigError, choose_rate, extends, load_config, prepare_experiment
from sgpo.world.experiment_results import mean_std, tuning_means
from sgpo.world.methods import DEFAULT_METHODS, METHODS, run_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "world_v1.yaml"


def sgpo(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "sgpo", *args], capture_output=True, text=True, env=env, timeout=900, cwd=cwd)


def started_runs(stderr: str) -> list[str]:
    return re.findall(r"\] (\S+ lr=\S+ seed=\d+): started", stderr)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment") / "run"
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


@pytest.mark.slow
def test_quick_experiment_reports_every_method_and_seed_consistently(quick):
    out, proc = quick
    exp = load_config(CONFIG, quick=True)
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == list(DEFAULT_METHODS) == list(exp.methods)
    assert results["seeds"] == [0, 1, 2] and results["shared_warmup"] is True
    grid = [f"{x:g}" for x in exp.learning_rates]
    assert len(grid) >= 3
    for name, m in results["methods"].items():
        # the rate is from the grid, and it is the best on validation (ties: the smaller rate)
        assert list(m["validation_auto"]) == grid
        best = max(grid, key=lambda x: (m["validation_auto"][x], -float(x)))
        assert f"{m['chosen_learning_rate']:g}" == best
        for key in ("test_auto", "test_guided"):
            s = m[key]
            assert len(s["per_seed"]) == 3
            assert s["mean"] == pytest.approx(statistics.fmean(s["per_seed"]))
            assert s["std"] == pytest.approx(statistics.stdev(s["per_seed"]))
        # every run of the method exists, with the same number of optimizer steps; a tuning run is
        # evaluated on validation only unless its rate was chosen (the test split decides nothing)
        for lr in exp.learning_rates:
            tuned = json.loads((run_dir(out, name, lr, 0) / "run.json").read_text())
            assert "validation" in tuned and ("test" in tuned) == (lr == m["chosen_learning_rate"]), (name, lr)
            assert ("novel" in tuned or "longer" in tuned or "test_greedy" in tuned) <= (lr == m["chosen_learning_rate"])
        assert list(results["tuning_per_family"][name]) == [f"{m['chosen_learning_rate']:g}"]
        runs = [json.loads((run_dir(out, name, m["chosen_learning_rate"], s) / "run.json").read_text()) for s in range(3)]
        assert [r["test"]["auto"] for r in runs] == m["test_auto"]["per_seed"]
        assert all(r["steps"] == exp.setup.train.max_steps == m["steps"] for r in runs)
        assert all(len(r["test"]["correct"]["auto"]) == results["test_problems"] for r in runs)
        if METHODS[name].base == "sft":
            assert m["generated_tokens_per_run"] == 0
        else:  # equal sample budget: the same completions per problem, and sampled tokens are counted
            cfg = runs[0]["config"]["sgpo_config"]
            assert cfg["num_generations"] + cfg["num_guided_generations"] == exp.setup.train.rollouts_per_problem
            assert cfg["per_device_train_batch_size"] == exp.setup.train.problems_per_step
            assert m["generated_tokens_per_run"] > 0
    # the ablations are what they say
    sgpo_cfg = lambda name: json.loads(
        (run_dir(out, name, results["methods"][name]["chosen_learning_rate"], 0) / "run.json").read_text()
    )["config"]["sgpo_config"]  # noqa: E731
    assert sgpo_cfg("sgpo_imitation")["distill_divergence"] == "imitation"
    assert sgpo_cfg("sgpo_no_proximal")["distill_proximal"] is False
    assert sgpo_cfg("luffy")["mix_strong_responses"] is True and sgpo_cfg("luffy")["num_guided_generations"] == 0
    assert sgpo_cfg("grpo")["distill_coef"] == 0 and sgpo_cfg("sgpo")["distill_coef"] > 0
    # SGPO minus every other method: the interval holds the mean difference, which is the difference of the means
    assert set(results["comparisons"]) == set(DEFAULT_METHODS) - {"sgpo"}
    for name, c in results["comparisons"].items():
        assert c["ci95"][0] <= c["mean_difference"] <= c["ci95"][1]
        diff = results["methods"]["sgpo"]["test_auto"]["mean"] - results["methods"][name]["test_auto"]["mean"]
        assert c["mean_difference"] == pytest.approx(diff, abs=1e-5)
    sel = results["selectivity"]
    for model in ("warmup", "sgpo", "sgpo_imitation"):
        for signal in ("forward_kl", "imitation_nll"):
            assert 0 < sel[model][signal]["token_share"] < 1 and 0 <= sel[model][signal]["mass_share"] <= 1
    assert results["instance_weight"]["sgpo"]["steps"] == list(range(1, exp.setup.train.max_steps + 1))
    for png in ("learning_curves.png", "test_accuracy.png", "instance_weight.png"):
        assert (out / "plots" / png).stat().st_size > 5_000
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in DEFAULT_METHODS)
    assert "SGPO − method [95% CI]" in proc.stdout
    # the pre-registered analysis: claim 1 by SGPO minus the best of GRPO, SFT and LUFFY
    analysis = results["claims"]
    best = max(("grpo", "sft", "luffy"), key=lambda n: results["methods"][n]["test_auto"]["mean"])
    assert analysis["primary"]["best"] == best
    assert analysis["primary"]["difference"] == pytest.approx(
        results["methods"]["sgpo"]["test_auto"]["mean"] - results["methods"][best]["test_auto"]["mean"], abs=1e-6
    )
    assert analysis["claims"]["1"]["verdict"] == analysis["primary"]["verdict"] in ("shown", "not shown", "refuted")
    assert analysis["claims"]["5"]["verdict"] == "not tested"  # world v1 has no generalisation split
    assert "| (1) SGPO beats SFT, GRPO and LUFFY |" in table
    # 8 methods x 3 rates at seed 0, then 8 methods x 2 more seeds: each run once
    assert len(started_runs(proc.stderr)) == len(set(started_runs(proc.stderr))) == 8 * 3 + 8 * 2


@pytest.mark.slow
def test_quick_experiment_resumes_without_redoing_finished_runs(quick):
    out, _ = quick
    before = json.loads((out / "results.json").read_text())
    lost = run_dir(out, "grpo", before["methods"]["grpo"]["chosen_learning_rate"], 2)
    shutil.rmtree(lost)  # as if interrupted while this run trained
    stamps = {
        p: p.stat().st_mtime_ns for p in [*(out / "runs").rglob("run.json"), out / "setup" / "warmup" / "model.safetensors"]
    }
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert started_runs(proc.stderr) == [f"grpo lr={before['methods']['grpo']['chosen_learning_rate']:g} seed=2"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished runs (and the warm-up) not rewritten
    after = json.loads((out / "results.json").read_text())
    # the redone run gives the same numbers (same seed, single-threaded), so the results agree
    assert after["methods"]["grpo"]["test_auto"] == before["methods"]["grpo"]["test_auto"]
    assert after["comparisons"] == before["comparisons"]
    # this call's wall time covers only the redone run; the sum over every run does not depend on it
    runs = [json.loads(p.read_text()) for p in (out / "runs").rglob("run.json")]
    assert after["run_seconds_sum"] == pytest.approx(
        sum(r["wall_seconds"]["train"] + r["wall_seconds"]["evaluate"] for r in runs), abs=0.1 * len(runs)
    )
    assert after["run_seconds_sum"] > after["wall_seconds"]["total"] - after["wall_seconds"]["setup (world, warm-up)"]
    # another configuration is refused, never mixed in (fewer seeds: more would extend the folder)
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--seeds", "1", "--out", str(out))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "holds an experiment of another configuration" in proc.stderr


@pytest.mark.slow
def test_records_carry_a_finished_experiment_to_a_new_folder_without_its_models(quick, tmp_path):
    out, _ = quick
    before = json.loads((out / "results.json").read_text())
    records = tmp_path / "records"
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--out", str(out), "--sync-records", str(records))
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = sorted(p.relative_to(out) for p in (out / "runs").rglob("run.json"))
    assert f"the records hold {len(runs)} finished runs" in proc.stdout
    assert sorted(p.relative_to(records) for p in records.rglob("run.json")) == runs
    assert all(
        (records / r.parent / "metrics.jsonl").read_bytes() == (out / r.parent / "metrics.jsonl").read_bytes() for r in runs
    )
    assert not list(records.rglob("*.safetensors")) and (records / "setup" / "eval" / "warmup.json").is_file()
    # as if the records were kept before GRPO's chosen tuning run (seed 0) was evaluated in full and before the
    # results: a new folder gets them, rebuilds the world and warm-up, and trains again only the runs whose model
    # is needed: that GRPO run (evaluated further) and the seed-0 SGPO and imitation runs (selectivity)
    chosen = {m: v["chosen_learning_rate"] for m, v in before["methods"].items()}
    grpo0 = run_dir(Path(), "grpo", chosen["grpo"], 0) / "run.json"
    full = json.loads((records / grpo0).read_text())
    (records / grpo0).write_text(json.dumps({k: v for k, v in full.items() if k not in ("test", "test_greedy")}))
    for name in ("results.json", "results.md", "selectivity.json"):
        (records / name).unlink()
    new = tmp_path / "new"
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--out", str(new), "--sync-records", str(records))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"{len(runs)} finished runs" in proc.stdout and not (new / "setup").exists()
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--out", str(new))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(started_runs(proc.stderr)) == sorted(f"{m} lr={chosen[m]:g} seed=0" for m in ("grpo", "sgpo", "sgpo_imitation"))
    after = json.loads((new / "results.json").read_text())
    assert after["comparisons"] == before["comparisons"]
    assert all(after["methods"][m]["test_auto"] == before["methods"][m]["test_auto"] for m in before["methods"])
    assert json.loads((new / "selectivity.json").read_text()) == json.loads((out / "selectivity.json").read_text())
    assert json.loads((new / grpo0).read_text())["test"] == full["test"]
    # the new folder's warm-up evaluation is the records': syncing back is accepted; one that differs is refused
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--out", str(new), "--sync-records", str(records))
    assert proc.returncode == 0 and json.loads((records / grpo0).read_text())["test"] == full["test"], proc.stderr
    warm = records / "setup" / "eval" / "warmup.json"
    warm.write_text(json.dumps({**json.loads(warm.read_text()), "auto": -1.0}))
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--out", str(new), "--sync-records", str(records))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "warm-up's evaluation differs" in proc.stderr
    # a record that the run trained again does not reproduce is refused, never combined with new runs
    (new / "results.json").unlink()
    shutil.rmtree(new / grpo0.parent)
    shutil.copytree(records / grpo0.parent, new / grpo0.parent)
    record = {k: v for k, v in json.loads((new / grpo0).read_text()).items() if k not in ("test", "test_greedy")}
    record["validation"]["auto"] = record["validation"]["auto"] + 0.5
    (new / grpo0).write_text(json.dumps(record))
    proc = sgpo("experiment", "--config", str(CONFIG), "--quick", "--out", str(new))
    assert proc.returncode == 2 and "the run's evaluations differ from its run.json" in proc.stderr.strip().splitlines()[-1]


def test_the_records_of_the_shipped_experiment_are_not_ignored_by_git():
    # experiments/records/ is committed with the code (docs/results.md, "The experiment's records"): none of its
    # files may fall under .gitignore (which once ignored every folder named runs/, the records' included)
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [
        f"experiments/records/world-v2.9/{p}"
        for p in ("experiment.json", "runs/grpo/lr=3e-05,seed=0/run.json", "runs-larger/sgpo/lr=0.0001,seed=14/metrics.jsonl")
    ]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout  # 1: none of them is ignored
    proc = subprocess.run(["git", "check-ignore", "--no-index", "runs/world-v2.9/runs/grpo/lr=3e-05,seed=0/run.json"], cwd=ROOT)
    assert proc.returncode == 0  # the experiment's own folder (models and all) still is


# -- statistics ------------------------------------------------------------------------------------
def test_mean_std_and_choose_rate():
    assert mean_std([0.5]) == {"per_seed": [0.5], "mean": 0.5, "std": 0.0}
    assert mean_std([0.2, 0.4])["std"] == pytest.approx(statistics.stdev([0.2, 0.4]))
    # each run's test-split accuracy ranks the rates the other way round: a choice that looked at the
    # test split (a leak) would pick another rate, so it fails on the value, not on a missing key
    runs = [
        {"learning_rate": lr, "validation": {"auto": acc}, "test": {"auto": 1 - acc, "guided": 1 - acc}}
        for lr, acc in ((3e-4, 0.5), (1e-4, 0.5), (3e-5, 0.4))
    ]
    assert choose_rate(runs) == 1e-4  # a tie goes to the smaller rate
    runs[2]["validation"]["auto"] = 0.6
    assert choose_rate(runs) == 3e-5
    runs[2]["test"]["auto"] = 0.0
    assert choose_rate(runs) == 3e-5


def test_the_rate_is_chosen_on_the_mean_over_the_tuning_seeds():
    # 1e-4's seeds score 0.5 and 0.1 (mean 0.3), 3e-5's 0.35 and 0.35 (mean 0.35): the mean picks 3e-5,
    # where seed 0 alone would pick 1e-4
    runs = [
        {"learning_rate": lr, "seed": s, "validation": {"auto": acc}}
        for lr, s, acc in ((1e-4, 0, 0.5), (1e-4, 1, 0.1), (3e-5, 0, 0.35), (3e-5, 1, 0.35))
    ]
    assert choose_rate(runs) == 3e-5 and choose_rate([r for r in runs if r["seed"] == 0]) == 1e-4
    extra = {"learning_rate": 3e-5, "seed": 2, "validation": {"auto": 0.0}}  # a further seed, not a tuning run
    assert tuning_means([*runs, extra], tuning_seeds=2) == pytest.approx({"0.0001": 0.3, "3e-05": 0.35})


def test_tuning_seeds_wiring(monkeypatch):
    """tune_and_seed trains every rate at each tuning seed (validation only), chooses on their mean,
    then the further seeds at the chosen rate; every (rate, seed) once in what it returns."""
    import sgpo.world.experiment as experiment

    exp = replace(load_config(CONFIG, quick=True), learning_rates=(1e-5, 1e-4), seeds=3, tuning_seeds=2)
    acc = {(1e-5, 0): 0.5, (1e-5, 1): 0.1, (1e-4, 0): 0.35, (1e-4, 1): 0.35, (1e-4, 2): 0.4}
    calls = []

    def fake_run_all(out, exp, jobs, progress, validation_only=False):
        calls.append((list(jobs), validation_only))
        return [{"method": m, "learning_rate": lr, "seed": s, "validation": {"auto": acc[lr, s]}} for m, lr, s, _ in jobs]

    monkeypatch.setattr(experiment, "run_all", fake_run_all)
    runs, chosen = experiment.tune_and_seed(Path("unused"), exp, ["grpo"], "base", None, {})
    assert calls[0] == ([("grpo", lr, s, "base") for lr in (1e-5, 1e-4) for s in (0, 1)], True)
    assert chosen == {"grpo": 1e-4}  # mean 0.35 against 0.3; seed 0 alone would choose 1e-5
    assert calls[1] == ([("grpo", 1e-4, s, "base") for s in (0, 1, 2)], False)
    assert sorted((r["learning_rate"], r["seed"]) for r in runs) == sorted(acc)


# -- configuration ---------------------------------------------------------------------------------
def test_shipped_config_is_a_fair_full_experiment():
    exp = load_config(CONFIG)
    assert exp.methods == DEFAULT_METHODS and exp.seeds >= 3 and len(exp.learning_rates) >= 3
    assert exp.setup.world.per_family["validation"] > 0 and not exp.setup.quick
    assert load_config(CONFIG, seeds=5).seeds == 5
    assert load_config(CONFIG, quick=True).setup.quick


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rates: [1.0e-4, fast]\n", "learning_rates[1] must be a number, got 'fast'"),
        ("methods: [sgpo, ppo]\n", "methods[1]: unknown method 'ppo'"),
        ("methods: [grpo, sft]\n", "methods must include 'sgpo'"),
        (
            "methods: [grpo, sft]\ncompare: {sft: luffy}\n",
            "compare.sft: the reference must be another of the methods, got 'luffy'",
        ),
        ("methods: [grpo, sft]\ncompare: {sgpo: grpo}\n", "compare: unknown key 'sgpo'"),
        ("train: {max_step: 3}\n", "train: unknown key 'max_step'"),
        ("wrld: {heldout: 3}\n", "top level: unknown key 'wrld'"),
        (
            "world: {heldout: 3, train: 3, warmup: 3}\n",
            "world: needs a number of problems per family for every split; missing 'validation'",
        ),
        ("seeds: 0\n", "seeds must be >= 1, got 0"),
        ("model: {hidden: 64}\n", "model: unknown key 'hidden'"),
        ("larger_model: {hidden_size: big}\n", "larger_model.hidden_size must be an integer, got 'big'"),
        ("larger_methods: [grpo, ppo]\n", "larger_methods must be a list of the methods"),
        ("warmup: {auto_exposure: {sum: lots}}\n", "warmup.auto_exposure.sum must be a number, got 'lots'"),
        ("warmup: {step: 5}\n", "warmup: unknown key 'step'"),
        ("warmup: {auto_max_numbers: 0}\n", "warmup.auto_max_numbers must be >= 1, got 0"),
        ("warmup: {wording_exposure: 0.5}\n", "warmup.wording_exposure: a list of shares in [0, 1]"),
        ("warmup: {auto_exposure: {}, wording_exposure: [0.5, 1.5]}\n", "warmup.wording_exposure: shares in [0, 1]"),
        ("warmup: {wording_exposure: [0.5, 0.2]}\n", "warmup: set one of auto_exposure and wording_exposure"),
        ("evaluation: {samples: 4, temperature: 0}\n", "evaluation.samples > 1 needs evaluation.temperature > 0"),
        ("world: {heldout: 3, train: 3, warmup: 3, validation: 3, families: v3}\n", "world: unknown world 'v3'"),
        ("world: {heldout: 3, train: 3, warmup: 3, validation: 3, list_length: 5}\n", "world.list_length must be [min, max]"),
        (
            "world: {heldout: 3, train: 3, warmup: 3, validation: 3, warmup_length: [9, 5]}\n",
            "world: warmup_length must be (min, max) with 1 <= min <= max",
        ),
        ("preregistration: 3\n", "preregistration must be the path of the pre-registration file"),
        ("seeds: 3\ntuning_seeds: 4\n", "tuning_seeds (4) must be at most seeds (3)"),
        ("tuning_seeds: 0\n", "tuning_seeds must be >= 1, got 0"),
        ("learning_rates: [1e-4, 1e-4]\n", "learning_rates must be distinct positive numbers"),
    ],
)
def test_config_mistakes_are_one_line_naming_file_and_field(tmp_path, text, message):
    path = tmp_path / "exp.yaml"
    path.write_text("world: {heldout: 3, train: 3, warmup: 3, validation: 3}\n" + text)  # a later key replaces an earlier one
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_the_config_hash_covers_what_sets_the_numbers_and_nothing_else(tmp_path):
    base = "world: {heldout: 3, train: 3, warmup: 3, validation: 3}\n"
    path = tmp_path / "exp.yaml"

    def hash_of(text: str) -> str:
        path.write_text(base + text)
        return load_config(path).config_hash()

    h = hash_of("")
    assert len(h) == 64 and h == hash_of("")
    assert hash_of("processes: 1\n") == h  # how many runs go side by side changes no number
    assert hash_of("preregistration: elsewhere.md\n") == h  # where the hash is kept neither
    for changed in ("seeds: 4\n", "train: {num_iterations: 3}\n", "warmup: {auto_from_step: 10}\n",
                    "evaluation: {samples: 8, temperature: 0.7}\n", "model: {num_hidden_layers: 3}\n",
                    "learning_rates: [1.0e-5, 3.0e-5, 1.0e-4]\n",
                    "world: {heldout: 3, train: 3, warmup: 3, validation: 3, warmup_length: [5, 10]}\n"):  # fmt: skip
        assert hash_of(changed) != h, changed


def test_confirmatory_results_need_the_preregistered_hash_and_a_passing_gate(tmp_path):
    from sgpo.world.experiment import GATE_FILE, status_of

    prereg = tmp_path / "prereg.md"
    path = tmp_path / "exp.yaml"
    path.write_text(f"world: {{heldout: 3, train: 3, warmup: 3, validation: 3}}\npreregistration: {prereg}\n")
    exp = load_config(path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError, match="no such file"):
        status_of(exp, out, exploratory=False)
    prereg.write_text("config hash: `" + "0" * 64 + "`\n")
    with pytest.raises(ConfigError, match="exploratory results only"):
        status_of(exp, out, exploratory=False)
    assert status_of(exp, out, exploratory=True) == "exploratory"
    prereg.write_text(f"... config hash: `{exp.config_hash()}` ...\n")
    with pytest.raises(ConfigError, match="no passing gate"):  # registered, but no gate yet
        status_of(exp, out, exploratory=False)
    (out / GATE_FILE).write_text(json.dumps({"config_hash": exp.config_hash(), "passed": False}))
    with pytest.raises(ConfigError, match="no passing gate"):
        status_of(exp, out, exploratory=False)
    (out / GATE_FILE).write_text(json.dumps({"config_hash": exp.config_hash(), "passed": True}))
    assert status_of(exp, out, exploratory=False) == "confirmatory"
    # an amendment below the original registers a new hash: the last one counts
    prereg.write_text(f"config hash: `{exp.config_hash()}`\n\n## Amendment\n\nconfig hash: `{'1' * 64}`\n")
    with pytest.raises(ConfigError, match=f"pre-registers config hash {'1' * 64}"):
        status_of(exp, out, exploratory=False)
    prereg.write_text(f"config hash: `{'1' * 64}`\n\n## Amendment\n\nconfig hash: `{exp.config_hash()}`\n")
    assert status_of(exp, out, exploratory=False) == "confirmatory"
    path.write_text(path.read_text() + "seeds: 4\n")  # any change after registering: refused
    with pytest.raises(ConfigError, match="exploratory results only"):
        status_of(load_config(path), out, exploratory=False)
    assert status_of(load_config(CONFIG), out, exploratory=False) == "exploratory"  # no pre-registration named


def test_more_rates_or_seeds_resume_the_folder_and_nothing_else_does(tmp_path, capsys):
    """The grid-edge rule and C8: the same experiment with rates or seeds added takes the folder on
    (its finished runs kept); fewer of either, or an addition beside any other change, is refused."""
    exp = load_config(CONFIG, quick=True)
    out = tmp_path / "out"
    prepare_experiment(out, exp)
    kept = run_dir(out, "grpo", exp.learning_rates[0], 0) / "run.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    recorded = lambda: json.loads((out / "experiment.json").read_text())  # noqa: E731
    wider = replace(exp, learning_rates=(*exp.learning_rates, 1e-3))
    prepare_experiment(out, wider)
    assert "extended" in capsys.readouterr().err and kept.read_text() == "{}"
    assert recorded()["learning_rates"] == [*exp.learning_rates, 1e-3]
    prepare_experiment(out, wider)  # now recorded: no note
    assert capsys.readouterr().err == ""
    more = replace(wider, seeds=exp.seeds + 3)
    prepare_experiment(out, more)
    assert "extended" in capsys.readouterr().err and recorded()["seeds"] == exp.seeds + 3 and kept.read_text() == "{}"
    more = replace(more, tuning_seeds=2)  # a field older experiment.json files lack (at its default, 1)
    prepare_experiment(out, more)
    assert "extended" in capsys.readouterr().err and recorded()["tuning_seeds"] == 2
    for other in (
        wider,
        exp,
        replace(more, tuning_seeds=1),
        replace(more, learning_rates=(*more.learning_rates, 3e-3), bootstrap_samples=7),
    ):
        with pytest.raises(OutputDirError, match="another configuration"):
            prepare_experiment(out, other)
    assert recorded() == json.loads(json.dumps(more.to_dict()))


def test_another_process_count_or_preregistration_path_resumes_the_folder(tmp_path, capsys):
    # neither decides a number (the hash leaves them out): a machine with more cores, or the YAML read
    # from elsewhere (its preregistration path resolved from there), goes on with the same runs
    exp = load_config(CONFIG, quick=True)
    out = tmp_path / "out"
    prepare_experiment(out, replace(exp, preregistration="experiments/preregistration.md"))
    kept = run_dir(out, "grpo", exp.learning_rates[0], 0) / "run.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    other = replace(exp, processes=exp.processes + 6, preregistration="/elsewhere/experiments/preregistration.md")
    assert other.config_hash() == exp.config_hash()
    prepare_experiment(out, other)
    assert capsys.readouterr().err == "" and kept.read_text() == "{}"
    assert json.loads((out / "experiment.json").read_text())["processes"] == exp.processes + 6  # this call's
    with pytest.raises(OutputDirError, match="another configuration"):  # a number-deciding field still refuses
        prepare_experiment(out, replace(other, selectivity_rows=exp.selectivity_rows + 1))
    prepare_experiment(out, replace(exp, seeds=exp.seeds + 1, processes=1))  # an extension from another machine
    assert "extended" in capsys.readouterr().err and kept.read_text() == "{}"


def test_the_mismatched_control_never_gives_a_problem_its_own_family_strategy():
    from sgpo.world.extractor import fill_strategies
    from sgpo.world.generate import WorldSpec, build_world
    from sgpo.world.train_data import mismatched_rows

    train = fill_strategies(build_world(0, WorldSpec(per_family={"train": 20}))["train"])
    own = {r["family"]: r["strategy"] for r in train}
    rows = mismatched_rows(train, seed=0)
    assert [r["id"] for r in rows] == [r["id"] for r in train]
    for r in rows:
        assert r["strategy_family"] != r["family"] and r["strategy"] == own[r["strategy_family"]] != own[r["family"]]
    # every other family is drawn for some problem of each family, and the draw is a function of the seed
    for fam in own:
        assert {r["strategy_family"] for r in rows if r["family"] == fam} == set(own) - {fam}
    assert mismatched_rows(train, seed=0) == rows and mismatched_rows(train, seed=1) != rows


def test_cli_reports_a_config_mistake_in_one_line_before_loading_anything(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("world: {heldout: 3, train: 3, warmup: 3, validation: 3}\nseeds: three\n")
    proc = sgpo("experiment", "--config", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr == f"sgpo experiment: error: {path}: seeds must be an integer, got 'three'\n"
    assert not (tmp_path / "out").exists()


# -- world v2: the gate, then the experiment -------------------------------------------------------
V2 = ROOT / "experiments" / "world_v2.yaml"


@pytest.mark.slow
def test_v2_quick_gate_trains_only_the_controls_and_the_experiment_reuses_their_runs(tmp_path):
    out = tmp_path / "v2"
    proc = sgpo("experiment", "--config", str(V2), "--quick", "--out", str(out), "--gate")
    assert proc.returncode == 0, proc.stderr[-4000:]
    exp = load_config(V2, quick=True)
    report = json.loads((out / "gate.json").read_text())
    assert report["config_hash"] == exp.config_hash()
    assert set(report["sizes"]) == {"base", "larger"}
    for size in report["sizes"].values():
        assert [c["name"] for c in size["criteria"]] == ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C11"]
    assert report["scaling"]["name"] == "C10" and report["passed"] is False  # a smoke-test world passes nothing
    assert "| C1 headroom |" in (out / "gate.md").read_text() and "| C1 headroom |" in proc.stdout
    # the gate trains the positive controls only: no SGPO (or LUFFY) run exists
    for runs in ("runs", "runs-larger"):
        assert sorted(p.name for p in (out / runs).iterdir()) == ["grpo", "sft"]
    assert started_runs(proc.stderr) and all(r.split()[0] in ("grpo", "sft") for r in started_runs(proc.stderr))
    # the experiment then runs only what the gate did not (quick: never confirmatory); a smoke-test warm-up scores 0 at
    # both sizes, so the larger one's evaluation gets a value of its own, which its reports must show (they read it back)
    warm_file = out / "setup-larger" / "eval" / "warmup.json"
    warm_file.write_text(json.dumps({**json.loads(warm_file.read_text()), "guided": 0.123}))
    # the larger warm-up gone (as in a folder restored from records): it is built again, but only once the
    # base size's runs are done, so a call cut off before then has not spent its time on it
    shutil.rmtree(out / "setup-larger" / "warmup")
    proc = sgpo("experiment", "--config", str(V2), "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert {r.split()[0] for r in started_runs(proc.stderr)} == {"sgpo", "sgpo_mismatched"}
    lines = proc.stderr.splitlines()
    last_base = max(i for i, line in enumerate(lines) if re.search(r"seed=\d+: done", line) and "(larger)" not in line)
    warmups = [i for i, line in enumerate(lines) if "] warm-up: started" in line]
    assert len(warmups) == 2 and warmups[0] < last_base < warmups[1]  # the base one (kept), then the larger one
    assert (out / "setup-larger" / "warmup" / "model.safetensors").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "exploratory" and results["config_hash"] == exp.config_hash()
    assert list(results["methods"]) == list(exp.methods) and list(results["larger"]["methods"]) == list(exp.larger_methods)
    assert "novel_auto" in results["methods"]["sgpo"] and "longer_auto" in results["methods"]["sgpo"]
    table = (out / "results.md").read_text()
    assert table.startswith("**Exploratory results**")
    # the larger size is reported with its own warm-up and runs: a main table in results.md, the run time summed
    base_guided = json.loads((out / "setup" / "eval" / "warmup.json").read_text())["guided"]
    assert results["warmup"]["test_guided"] == base_guided != 0.123 and results["larger"]["warmup"]["test_guided"] == 0.123
    larger = table.split("**At the larger model size**")[1].split("Test autonomous accuracy per family")[0]
    assert "guided 0.123." in larger and "guided 0.123" not in table.split("**At the larger model size**")[0]
    assert all(f"| {m} | {results['larger']['methods'][m]['chosen_learning_rate']:g} |" in larger for m in exp.larger_methods)
    assert "| sgpo_mismatched |" not in larger
    seconds = {  # the experiment's runs: the gate's larger SFT runs are not among them when SFT is not a larger method
        size: [json.loads(p.read_text())["wall_seconds"] for m in methods for p in (out / d / m).rglob("run.json")]
        for size, d, methods in (("base", "runs", exp.methods), ("larger", "runs-larger", exp.larger_methods))
    }
    assert set(exp.larger_methods) < {p.name for p in (out / "runs-larger").iterdir()}
    for size, walls in seconds.items():
        assert results["run_seconds_by_size"][size] == pytest.approx(
            sum(w["train"] + w["evaluate"] for w in walls), abs=0.1 * len(walls)
        )
    assert results["run_seconds_sum"] == pytest.approx(sum(results["run_seconds_by_size"].values()), abs=0.1)


def test_a_relative_preregistration_path_is_read_from_the_yaml_files_folder(tmp_path, monkeypatch):
    # the repository's experiments are run from the repo root; a user elsewhere gets the same file
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "exp.yaml"
    path.write_text("world: {heldout: 3, train: 3, warmup: 3, validation: 3}\npreregistration: prereg.md\n")
    monkeypatch.chdir(tmp_path)
    assert Path(load_config("cfg/exp.yaml").preregistration) == Path("cfg") / "prereg.md"
    monkeypatch.chdir(ROOT / "src")  # not the repo root: the v2.9 YAML still finds its pre-registration
    assert Path(load_config(ROOT / "experiments" / "world_v2_9.yaml").preregistration).is_file()


def test_v2_config_is_the_preregistered_protocol():
    exp = load_config(V2)
    assert Path(exp.preregistration) == ROOT / "experiments" / "preregistration.md" and exp.larger_model is not None
    assert exp.setup.train.num_iterations >= 2  # C11: the clip and the proximal mask can bind
    assert exp.setup.eval_samples >= 4 and exp.setup.eval_temperature == 1.0
    assert "sgpo_mismatched" in exp.methods and set(exp.larger_methods) <= set(exp.methods)
    assert {"novel", "longer"} <= set(exp.setup.world.per_family)
    assert load_config(V2, quick=True).preregistration is None  # a smoke test is never confirmatory


#: the config hashes of the world versions gated in docs/results.md: a file whose hash moves (an edit, or
#: a changed default it does not set) is no longer the protocol those gate figures belong to
GATED_HASHES = {
    "world_v2_4.yaml": "5adba3ec1dc99ded89ac99127e14662d420e68c19cf3fd87df4eaf1ee31995be",
    "world_v2_5.yaml": "a742e4032c3c688a5f9417689da88a945028ff80748e289c7628c0c2a395d06f",
    "world_v2_6.yaml": "945ef78568055300088885b870d968dbab4459c30e2fe97a35d0a693b25d1314",
    "world_v2_7.yaml": "463842169dc874eb087c8de407456e6232190cbc8724ca3be4f6d5351f9346c3",
    "world_v2_8.yaml": "ef2f1bb53255aff9d11d9a95bfefea4e9d6396ccf60d051b343a790d566bbad9",
    "world_v2_9.yaml": "9e668ff564b368e672b851d70ddbca0803c994e704c620c9f1484546e3164f4b",
}


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").rglob("world_*.yaml")), ids=lambda p: p.name)
def test_every_shipped_world_experiment_loads_in_full_and_quick(path):
    """Each shipped experiment file is a valid protocol in both settings (one-line errors otherwise)."""
    full, quick = load_config(path), load_config(path, quick=True)
    assert full.config_hash() != quick.config_hash()
    if path.name in GATED_HASHES:
        assert full.config_hash() == GATED_HASHES[path.name]


def test_world_v2_5_grades_the_warm_up_by_wording_in_both_settings():
    """v2.5's one change over v2.4 (docs/results.md): the quick smoke test exercises it too."""
    v24 = load_config(ROOT / "experiments" / "world_v2_4.yaml")
    for quick in (False, True):
        warm = load_config(ROOT / "experiments" / "world_v2_5.yaml", quick=quick).setup.warmup
        assert warm.wording_exposure == (0.6, 0.3, 0.1) and warm.auto_exposure == {}
    v25 = load_config(ROOT / "experiments" / "world_v2_5.yaml")
    assert replace(v25.setup, warmup=v24.setup.warmup) == v24.setup  # nothing else of the setting differs


def test_world_v2_6_is_v2_5_with_twice_the_rl_budget():
    """v2.6's one change over v2.5 (docs/results.md): 80 RL steps per run, every method and size alike."""
    v25, v26 = (load_config(ROOT / "experiments" / f"world_v2_{v}.yaml") for v in (5, 6))
    assert (v25.setup.train.max_steps, v26.setup.train.max_steps) == (40, 80)
    assert replace(v26, setup=replace(v26.setup, train=v25.setup.train)) == v25
    quick25, quick26 = (load_config(ROOT / "experiments" / f"world_v2_{v}.yaml", quick=True) for v in (5, 6))
    assert quick26 == quick25  # the smoke-test setting is v2.5's


def test_world_v2_7_is_v2_6_with_a_wider_grid_and_more_seeds():
    """v2.7 is v2.6 with 1e-3 added to the grid (the grid-edge rule) and ten seeds (C8), nothing
    else: v2.6's folder resumes under it."""
    v26, v27 = (load_config(ROOT / "experiments" / f"world_v2_{v}.yaml") for v in (6, 7))
    assert v27.learning_rates == (*v26.learning_rates, 1e-3) and (v26.seeds, v27.seeds) == (5, 10)
    assert extends(json.loads(json.dumps(v26.to_dict())), json.loads(json.dumps(v27.to_dict())))


def test_world_v2_8_is_v2_7_choosing_on_three_seeds():
    """v2.8 is v2.7 with each rate chosen on the mean over three seeds, nothing else: v2.7's folder
    resumes under it; its quick setting chooses on two, so the smoke test runs the wiring."""
    v27, v28 = (load_config(ROOT / "experiments" / f"world_v2_{v}.yaml") for v in (7, 8))
    assert (v27.tuning_seeds, v28.tuning_seeds) == (1, 3) and replace(v28, tuning_seeds=1) == v27
    assert extends(json.loads(json.dumps(v27.to_dict())), json.loads(json.dumps(v28.to_dict())))
    assert load_config(ROOT / "experiments" / "world_v2_8.yaml", quick=True).tuning_seeds == 2


def test_world_v2_9_is_v2_8_with_fifteen_seeds():
    """v2.9 is v2.8 with fifteen seeds (C8), nothing else, its smoke test v2.8's: v2.8's folder resumes
    under it."""
    v28, v29 = (load_config(ROOT / "experiments" / f"world_v2_{v}.yaml") for v in (8, 9))
    assert (v28.seeds, v29.seeds) == (10, 15) and replace(v29, seeds=10) == v28
    assert extends(json.loads(json.dumps(v28.to_dict())), json.loads(json.dumps(v29.to_dict())))
    assert load_config(ROOT / "experiments" / "world_v2_9.yaml", quick=True) == load_config(
        ROOT / "experiments" / "world_v2_8.yaml", quick=True
    )
