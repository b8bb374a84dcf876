"""`sgpo demo --quick` through the real CLI: the whole pipeline on the strategy world, in about a minute."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sgpo(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "sgpo", *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = sgpo("demo", "--quick", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


@pytest.mark.slow
def test_quick_demo_writes_results_plots_reports_and_prints_the_table(quick_demo):
    out, proc = quick_demo
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"methods", "wall_seconds", "seed"}
    assert list(results["methods"]) == ["warmup", "grpo", "sgpo"]
    for r in results["methods"].values():
        assert set(r) == {"heldout_auto", "heldout_guided"}  # exactly the documented keys
        assert 0.0 <= r["heldout_auto"] <= 1.0 and 0.0 <= r["heldout_guided"] <= 1.0
    per_family = json.loads((out / "per_family.json").read_text())["methods"]
    assert list(per_family) == ["warmup", "grpo", "sgpo"]
    for fams in per_family.values():
        assert len(fams) >= 6 and all(set(f) == {"auto", "guided"} for f in fams.values())
    assert results["seed"] == 0 and results["wall_seconds"] > 0
    for png in ("reward_curves.png", "heldout_accuracy.png"):
        assert (out / "plots" / png).stat().st_size > 5_000
    for method in ("grpo", "sgpo"):
        assert (out / method / "report" / "index.html").exists()
        assert (out / method / "model.safetensors").exists() and (out / method / "prompt_format.json").exists()
    assert "Held-out accuracy" in proc.stdout and "sgpo guided" in proc.stdout
    # the two runs had equal budgets: same steps, same rollouts per problem
    logs = {m: [json.loads(x) for x in (out / m / "metrics.jsonl").read_text().splitlines()] for m in ("grpo", "sgpo")}
    steps = {m: [r["step"] for r in logs[m] if "loss" in r] for m in logs}
    assert steps["grpo"] == steps["sgpo"] and steps["grpo"]
    assert "reward/guided" in logs["sgpo"][0] and "reward/guided" not in logs["grpo"][0]


@pytest.mark.slow
def test_rerun_resumes_and_other_folders_are_refused(quick_demo, tmp_path):
    out, _ = quick_demo
    before = (out / "results.json").read_text()
    again = sgpo("demo", "--quick", "--out", str(out), "--no-progress")  # everything is there: nothing is redone
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["methods"] == json.loads(before)["methods"]

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused = sgpo("demo", "--quick", "--out", str(other), "--no-progress")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert (other / "notes.txt").read_text() == "keep me"
    bad = sgpo("demo", "--quikc")
    assert bad.returncode == 2 and "unrecognized arguments: --quikc" in bad.stderr
