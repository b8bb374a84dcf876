"""`sgpo eval` end to end on a tiny local model, and the resumable suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_eval_fixtures import ORACLE_TEXT, tiny_models, write_jsonl  # noqa: F401 - fixture

from sgpo.commands.eval import main as eval_main
from sgpo.evaluation import EvalConfig, load_benchmarks, make_generator, run_suite
from sgpo.sampling import SamplingConfig
from sgpo.verify import Verifier

WORLD = [  # a strategy-world split as the world helper writes it; the oracle answers 4
    {"id": "w0", "problem": "What is 2+2?", "answer": "4", "response": "r", "strategy": "add", "family": "add"},
    {"id": "w1", "problem": "What is 1+3?", "answer": "4", "response": "r", "strategy": "add", "family": "add"},
    {"id": "w2", "problem": "What is 2+3?", "answer": "5", "response": "r", "strategy": "add", "family": "sum"},
    {"id": "w3", "problem": "What is 3+3?", "answer": "6", "response": "r", "strategy": "add", "family": "sum"},
]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def test_eval_cli_end_to_end(tiny_models, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "aime24.jsonl", [{"id": "2024-I-1", "problem": "What is 2+2?", "solution": "...", "answer": "004"}])
    heldout = write_jsonl(tmp_path / "world" / "heldout.jsonl", WORLD)
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "sgpo", "eval", "--model", str(tiny_models["oracle"]),
           "--benchmark", f"aime24,{heldout}", "--data-dir", str(data), "--k", "2", "--temperature", "1.0",
           "--greedy", "--max-new-tokens", "16", "--workers", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    aime, world = doc["benchmarks"]["aime24"], doc["benchmarks"]["heldout"]
    # the oracle answers 4: right on aime24 ("004"), right on 2 of the 4 world problems
    assert (aime["n"], aime["k"], aime["accuracy"], aime["pass_at_k"]) == (1, 2, 1.0, {"1": 1.0, "2": 1.0})
    assert world["accuracy"] == 0.5 and world["greedy_accuracy"] == 0.5 and world["num_timeouts"] == 0
    assert doc["average"]["accuracy"] == pytest.approx(0.75)  # (1.0 + 0.5) / 2
    assert doc["settings"]["backend"] == "hf" and doc["settings"]["temperature"] == 1.0
    samples = [json.loads(line) for line in (out / "samples" / "heldout.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and {s["completion"] for s in samples} == {ORACLE_TEXT}
    assert [s["correct"] for s in samples] == [True, True, True, True, False, False, False, False]
    assert set(samples[0]) >= {"id", "prompt", "completion", "extracted", "correct", "timed_out"}
    assert len((out / "samples" / "heldout.greedy.jsonl").read_text().splitlines()) == 4
    md = (out / "results.md").read_text()
    assert "| heldout | 4 | 50.0 |" in md and "**average**" in md
    assert proc.stdout == md  # the table is printed too


def test_eval_cli_argument_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        eval_main(["--model", "m", "--benchmark", "b", "--bogus"])
    assert exc.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert eval_main(["--model", "m", "--benchmark", "b", "--k", "4", "--temperature", "0"]) == 2
    assert "same greedy completion 4 times" in capsys.readouterr().err
    assert eval_main(["--model", "m", "--benchmark", "nope_bench"]) == 1
    assert "not a known benchmark" in capsys.readouterr().err


class CountingGenerator:
    """The real HF generator, counting how many prompts it is asked to sample."""

    def __init__(self, inner):
        self.inner, self.name, self.tokenizer, self.prompts = inner, inner.name, inner.tokenizer, 0

    def generate(self, prompts, **kw):
        self.prompts += len(prompts)
        return self.inner.generate(prompts, **kw)


def test_suite_resumes_finished_benchmarks(tiny_models, tmp_path):
    f = write_jsonl(tmp_path / "heldout.jsonl", WORLD)
    benches = load_benchmarks(f"{f},second={f}")
    gen = CountingGenerator(make_generator(str(tiny_models["oracle"])))
    config = EvalConfig(SamplingConfig(max_new_tokens=16))
    with Verifier(num_workers=1) as v:
        kw = dict(model=str(tiny_models["oracle"]), verifier=v)
        first = run_suite(gen, benches, tmp_path / "out", config, **kw)
        assert gen.prompts == 8
        again = run_suite(gen, benches, tmp_path / "out", config, **kw)
        assert gen.prompts == 8  # nothing sampled again
        assert again["benchmarks"] == first["benchmarks"]
        longer = EvalConfig(SamplingConfig(max_new_tokens=17))
        run_suite(gen, benches[:1], tmp_path / "out", longer, **kw)  # other settings: sampled
        assert gen.prompts == 12
        run_suite(gen, benches[:1], tmp_path / "out", config, overwrite=True, **kw)
        assert gen.prompts == 16
