"""`sgpo eval` end to end on a tiny local model, and the resumable suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sgpo.commands.eval import main as eval_main
from sgpo.data import read_rows, write_rows
from sgpo.evaluation import EvalConfig, default_out_dir, load_benchmarks, make_generator, model_identity, run_suite
from sgpo.sampling import SamplingConfig
from sgpo.verify import Verifier

from test_eval_fixtures import ORACLE_TEXT, tiny_models, write_jsonl  # noqa: F401 - fixture

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
    cmd = [
        sys.executable,
        "-m",
        "sgpo",
        "eval",
        "--model",
        str(tiny_models["oracle"]),
        "--benchmark",
        f"aime24,{heldout}",
        "--data-dir",
        str(data),
        "--k",
        "2",
        "--temperature",
        "1.0",
        "--greedy",
        "--max-new-tokens",
        "16",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
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


def _copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_eval_results_belong_to_the_model_not_its_folder_name(tiny_models, tmp_path, capsys):
    from sgpo.cli import main

    # two models in folders of the same name, with different weights (the oracle always answers 4)
    a = _copy_model(tiny_models["oracle"], tmp_path / "runs" / "tiny" / "sgpo12")
    b = _copy_model(tiny_models["random"], tmp_path / "runs" / "other2" / "sgpo12")
    heldout = write_jsonl(tmp_path / "heldout.jsonl", WORLD)
    args = ["eval", "--benchmark", str(heldout), "--max_new_tokens", "16", "--workers", "1"]
    shared = tmp_path / "shared"
    assert main([*args, "--model", str(a), "--out", str(shared)]) == 0
    assert main([*args, "--model", str(b), "--out", str(shared)]) == 0
    err = capsys.readouterr().err
    assert "read back" not in err and "holds results of another model" in err
    doc = json.loads((shared / "results.json").read_text())
    assert doc["model"] == str(b) and doc["model_identity"]["path"] == str(b.resolve())
    assert {s["completion"] for s in read_rows(shared / "samples" / "heldout.jsonl")} != {ORACLE_TEXT}  # b's own samples

    # the default --out is inside each model's folder: no collision, and `sgpo report MODEL` finds it
    assert main([*args, "--model", str(a)]) == 0 and main([*args, "--model", str(b)]) == 0
    capsys.readouterr()
    ra, rb = (json.loads((m / "eval" / "heldout" / "results.json").read_text()) for m in (a, b))
    assert ra["benchmarks"]["heldout"]["accuracy"] == 0.5 and ra["model"] == str(a) and rb["model"] == str(b)
    assert main(["report", str(a)]) == 0
    assert "eval/heldout" in (a / "report" / "index.html").read_text()
    # the same model again: read back; the same folder with new weights (a save rewrites the file): sampled again
    assert main([*args, "--model", str(a)]) == 0
    assert "heldout: read back from an earlier run of this model" in capsys.readouterr().err
    shutil.copy(b / "model.safetensors", a / "model.safetensors")
    assert main([*args, "--model", str(a)]) == 0
    assert "holds results of another model" in capsys.readouterr().err
    assert json.loads((a / "eval" / "heldout" / "results.json").read_text())["benchmarks"]["heldout"]["accuracy"] != 0.5


def test_default_out_dir_names_the_model_benchmarks_and_mode(tiny_models, tmp_path):
    f = write_jsonl(tmp_path / "heldout.jsonl", WORLD)
    benches = load_benchmarks(f"{f},math={f}")
    sampled = EvalConfig(SamplingConfig(k=8, temperature=0.6), guided=True)
    assert (
        default_out_dir(tiny_models["oracle"], benches, sampled) == tiny_models["oracle"] / "eval" / "heldout+math-k8-t0.6-guided"
    )
    assert default_out_dir("Qwen/Qwen2.5-Math-1.5B", benches[:1], EvalConfig()) == Path("eval/Qwen__Qwen2.5-Math-1.5B/heldout")


def test_model_identity_is_the_files_not_the_name(tiny_models, tmp_path):
    a = _copy_model(tiny_models["oracle"], tmp_path / "a" / "m")
    ident = model_identity(a)
    assert ident["path"] == str(a.resolve()) and "model.safetensors" in [f[0] for f in ident["files"]]
    (a / "metrics.jsonl").write_text("{}\n")  # a training log or an eval folder is not the model
    (a / "eval").mkdir()
    assert model_identity(a) == ident
    os.utime(a / "model.safetensors", ns=(1, 1))  # rewritten weights (same size here) get a new fingerprint
    assert model_identity(a) != ident
    assert model_identity("some/hub-id") == {"name": "some/hub-id"}  # not cached here


def test_eval_column_options_and_data_dir_layouts(tiny_models, tmp_path, capsys):
    from sgpo.cli import main

    odd = write_jsonl(
        tmp_path / "odd.jsonl",
        [{"key": "k1", "prompt": "What is 2+2?", "gold": "4"}, {"key": "k2", "prompt": "What is 2+3?", "gold": "5"}],
    )
    base = ["eval", "--model", str(tiny_models["oracle"]), "--max-new-tokens", "16", "--workers", "1"]
    assert main([*base, "--benchmark", str(odd), "--out", str(tmp_path / "o1")]) == 1
    err = capsys.readouterr().err
    assert "sgpo eval: error:" in err and "missing column 'problem'" in err and "--problem-column" in err
    # the options the message recommends
    assert (
        main(
            [
                *base,
                "--benchmark",
                str(odd),
                "--out",
                str(tmp_path / "o2"),
                "--problem-column",
                "prompt",
                "--answer_column",
                "gold",
                "--id-column",
                "key",
            ]
        )
        == 0
    )
    capsys.readouterr()
    doc = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert doc["benchmarks"]["odd"]["accuracy"] == 0.5
    assert [s["id"] for s in read_rows(tmp_path / "o2" / "samples" / "odd.jsonl")] == ["k1", "k2"]

    # --data-dir: NAME.jsonl, and the RL-for-math layout NAME/test.jsonl and NAME/test.parquet
    data = tmp_path / "data"
    write_jsonl(data / "aime24.jsonl", [{"id": "a1", "problem": "What is 2+2?", "answer": "4"}])
    write_jsonl(data / "amc23" / "test.jsonl", [{"id": "b1", "question": "What is 1+3?", "answer": 4.0}])
    write_rows(data / "math500" / "test.parquet", [{"unique_id": "c1", "problem": "What is 2+3?", "answer": "5"}])
    assert main([*base, "--benchmark", "aime24,amc23,math500", "--data-dir", str(data), "--out", str(tmp_path / "o3")]) == 0
    doc = json.loads((tmp_path / "o3" / "results.json").read_text())
    assert {n: (e["source"], e["accuracy"]) for n, e in doc["benchmarks"].items()} == {
        "aime24": (str(data / "aime24.jsonl"), 1.0),
        "amc23": (str(data / "amc23" / "test.jsonl"), 1.0),
        "math500": (str(data / "math500" / "test.parquet"), 0.0),
    }
    assert main([*base, "--benchmark", "minerva", "--data-dir", str(data)]) == 1
    assert "minerva/test.jsonl/.json/.parquet" in capsys.readouterr().err


def test_eval_model_errors_are_one_line(tmp_path, capsys):
    from sgpo.cli import main

    heldout = write_jsonl(tmp_path / "heldout.jsonl", WORLD)
    for model, says in [(tmp_path / "runs" / "nope", "no such model folder"), (tmp_path, "a folder without config.json")]:
        assert main(["eval", "--model", str(model), "--benchmark", str(heldout)]) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == f"sgpo eval: error: {model}: {says}" + (
            ", not a saved model (save_pretrained writes one)" if says.startswith("a folder") else ""
        )
