"""Metrics (hand-derived values), benchmark loading, and `evaluate_records` on a tiny local model."""

from __future__ import annotations

import json

import pytest

from sgpo.data import DataError
from sgpo.evaluation import (
    BENCHMARKS,
    EvalConfig,
    EvalResult,
    avg_at_k,
    evaluate_records,
    interval95,
    load_benchmark,
    load_benchmarks,
    mean_pass_at_k,
    pass_at_k,
    wilson_interval,
)
from sgpo.evaluation.generation import select_backend
from sgpo.evaluation.metrics import pass_k_values
from sgpo.evaluation.suite import average, markdown_table
from sgpo.sampling import SamplingConfig
from sgpo.verify import Verifier

from test_eval_fixtures import ORACLE_TEXT, tiny_models, write_jsonl  # noqa: F401 - fixture

# ----------------------------------------------------------------------------- metrics


def test_pass_at_k_against_hand_values():
    # n=5 samples, c=2 correct, k=2: 1 − C(3,2)/C(5,2) = 1 − 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)
    # n=4, c=1, k=3: 1 − C(3,3)/C(4,3) = 1 − 1/4 = 0.75
    assert pass_at_k(4, 1, 3) == pytest.approx(0.75, abs=1e-12)
    # k=1 is the fraction correct: c/n = 2/5
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4, abs=1e-12)
    # n − c < k: every k-subset holds a correct sample
    assert pass_at_k(5, 4, 2) == 1.0
    assert pass_at_k(5, 0, 3) == 0.0
    # n=10, c=3, k=5: 1 − C(7,5)/C(10,5) = 1 − 21/252 = 11/12
    assert pass_at_k(10, 3, 5) == pytest.approx(11 / 12, abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)  # k > n


def test_avg_and_mean_pass_at_k():
    per_problem = [[True, True, False, False, False], [False] * 5]
    # avg@5 = 2 correct / 10 samples
    assert avg_at_k(per_problem) == pytest.approx(0.2)
    # pass@2 = (0.7 + 0) / 2
    assert mean_pass_at_k(per_problem, 2) == pytest.approx(0.35)
    assert pass_k_values(8) == [1, 2, 4, 8] and pass_k_values(6) == [1, 2, 4, 6] and pass_k_values(1) == [1]


def test_wilson_interval_hand_value():
    # p = 0.5, n = 4, z = 1.959964 (z² = 3.841459):
    #   denominator 1 + z²/n = 1.960365; centre (0.5 + z²/8) / 1.960365 = 0.5
    #   half-width z/1.960365 · sqrt(0.25/4 + z²/64) = 0.999795 · sqrt(0.0625 + 0.060023) = 0.349961
    lo, hi = wilson_interval(0.5, 4)
    assert lo == pytest.approx(0.150039, abs=2e-6) and hi == pytest.approx(0.849961, abs=2e-6)
    # p = 1, n = 10: the half-width is z²/(2n)/(1 + z²/n), so lo = 1/(1 + z²/10) = 1/1.384146 = 0.722467
    assert wilson_interval(1.0, 10) == (pytest.approx(0.722467, abs=2e-6), 1.0)
    assert wilson_interval(0.0, 10) == (0.0, pytest.approx(1 - 0.722467, abs=2e-6))


def test_interval_uses_the_effective_sample_size_for_k_above_one():
    # per-problem accuracies 1, .5, 0, 0 → p = 3/8; their sample variance
    #   ((.625)² + (.125)² + 2·(.375)²) / 3 = .6875 / 3 = .229167; SE² = .229167 / 4 = .057292
    #   n_eff = p(1−p)/SE² = .234375 / .057292 = 4.0909 (within [n, n·k] = [4, 8])
    # Wilson(3/8, 4.0909): z²/n = .939023, centre (.375 + .469512)/1.939023 = .435530,
    #   half 1.959964/1.939023 · sqrt(.057292 + 3.841459/66.942) = 1.010800 · .338640 = .342297
    lo, hi = interval95([[1, 1], [1, 0], [0, 0], [0, 0]])
    assert lo == pytest.approx(0.093233, abs=1e-5) and hi == pytest.approx(0.777827, abs=1e-5)
    # problems agree within themselves (design effect k): the interval of n = 4 problems
    assert interval95([[1, 1], [1, 1], [0, 0], [0, 0]]) == pytest.approx(wilson_interval(0.5, 4))
    # identical per-problem accuracy (no between-problem spread): n·k = 8 samples
    assert interval95([[1, 0], [1, 0], [0, 1], [0, 1]]) == pytest.approx(wilson_interval(0.5, 8))


def test_average_across_benchmarks_is_unweighted():
    entries = {"a": {"accuracy": 0.5, "pass_at_k": {"1": 0.5, "4": 0.9}}, "b": {"accuracy": 0.1, "pass_at_k": {"1": 0.1}}}
    avg = average(entries)
    assert avg["accuracy"] == pytest.approx(0.3)  # (0.5 + 0.1) / 2, whatever the sizes
    assert avg["pass_at_k"] == {"1": pytest.approx(0.3)}  # pass@4 is not on every benchmark


# ----------------------------------------------------------------------------- benchmarks


def test_registry_has_the_standard_benchmarks():
    assert set(BENCHMARKS) == {"aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"}
    assert BENCHMARKS["math500"].hf_id == "HuggingFaceH4/MATH-500"


def test_registry_names_read_local_copies_with_hub_columns(tmp_path):
    # hub column names as the hub has them: AMC answers are floats, OlympiadBench answers lists
    write_jsonl(
        tmp_path / "amc23.jsonl", [{"id": 0, "question": "Q1", "answer": 27.0}, {"id": 1, "question": "Q2", "answer": 0.5}]
    )
    write_jsonl(
        tmp_path / "olympiadbench.jsonl",
        [
            {"id": 7, "question": "Find x.", "final_answer": ["$\\frac{1}{2}$"], "context": "A circle."},
            {"id": 8, "question": "Find y.", "final_answer": ["2", "3"], "context": None},
        ],
    )
    write_jsonl(tmp_path / "math500.jsonl", [{"unique_id": "test/a.json", "problem": "P", "answer": "\\pi", "level": 3}])
    amc, olym, m500 = load_benchmarks("amc23,olympiadbench,math500", data_dir=tmp_path)
    assert [(r["id"], r["problem"], r["answer"]) for r in amc.records] == [("0", "Q1", "27"), ("1", "Q2", "0.5")]
    assert olym.records[0]["problem"] == "A circle.\n\nFind x." and olym.records[0]["answer"] == "$\\frac{1}{2}$"
    assert olym.records[1]["problem"] == "Find y." and olym.records[1]["answer"] == "2, 3"
    assert m500.records[0]["id"] == "test/a.json" and m500.records[0]["level"] == 3
    assert amc.source == str(tmp_path / "amc23.jsonl")


def test_files_labels_limits_and_errors(tmp_path):
    f = write_jsonl(
        tmp_path / "heldout.jsonl",
        [{"id": f"r{i}", "problem": f"p{i}", "answer": str(i), "strategy": "s", "family": "f"} for i in range(5)],
    )
    b = load_benchmark(str(f), limit=2)
    assert b.name == "heldout" and [r["id"] for r in b.records] == ["r0", "r1"] and b.records[0]["family"] == "f"
    assert load_benchmark(f"world={f}").name == "world"
    with pytest.raises(DataError, match="not a known benchmark"):
        load_benchmark("aime2099")
    with pytest.raises(DataError, match="no aime24.jsonl"):
        load_benchmark("aime24", data_dir=tmp_path)
    with pytest.raises(DataError, match="two benchmarks are named 'heldout'"):
        load_benchmarks(f"{f},{f}")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "p", "answer": "1"}, {"problem": "q"}])
    with pytest.raises(DataError, match=r"bad.jsonl: row 1: missing column 'answer'"):
        load_benchmark(str(bad))


# ----------------------------------------------------------------------------- the harness


@pytest.fixture(scope="module")
def oracle(tiny_models):
    from transformers import AutoModelForCausalLM

    from sgpo.modeling import load_tokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_models["oracle"]), load_tokenizer(tiny_models["oracle"])


RECORDS = [  # the oracle always answers 4
    {"id": "a", "problem": "What is 2+2?", "answer": "4", "family": "add", "strategy": "add the numbers"},
    {"id": "b", "problem": "What is 1+3?", "answer": "\\frac{8}{2}", "family": "add", "strategy": "add the numbers"},
    {"id": "c", "problem": "What is 2+3?", "answer": "5", "family": "sum", "strategy": "add, then check"},
]


def test_evaluate_records_greedy(oracle):
    model, tok = oracle
    res = evaluate_records(model, tok, RECORDS, EvalConfig(SamplingConfig(max_new_tokens=16)), verifier=Verifier(num_workers=0))
    assert isinstance(res, EvalResult)
    assert res.n == 3 and res.k == 1 and res.num_timeouts == 0
    assert res.accuracy == pytest.approx(2 / 3) and res.pass_at_k == {1: pytest.approx(2 / 3)}
    assert res.ci95 == pytest.approx(wilson_interval(2 / 3, 3))
    assert res.by_group("family") == {"add": 1.0, "sum": 0.0}
    s = res.samples[1]
    assert s["id"] == "b" and s["completion"] == ORACLE_TEXT and s["extracted"] == "4" and s["correct"] is True
    assert s["timed_out"] is False and s["finished"] is True and s["answer"] == "\\frac{8}{2}"
    assert s["prompt"].startswith("<|im_start|>user\nWhat is 1+3?") and "\\boxed{}" in s["prompt"]
    assert res.summary()["greedy_accuracy"] == res.greedy_accuracy == pytest.approx(2 / 3)
    with pytest.raises(KeyError, match="no column 'difficulty'"):
        res.by_group("difficulty")


def test_evaluate_records_sampled_guided_and_truncated(oracle):
    model, tok = oracle
    config = EvalConfig(SamplingConfig(k=3, temperature=1.0, max_new_tokens=16, seed=0), guided=True)
    res = evaluate_records(model, tok, RECORDS, config, verifier=Verifier(num_workers=0))
    assert len(res.samples) == 9 and [s["sample_index"] for s in res.samples[:3]] == [0, 1, 2]
    assert "A strategy that solves problems of this kind:\nadd, then check" in res.samples[8]["prompt"]
    # the oracle's margin makes sampling deterministic: avg@3 = pass@3 = 2/3
    assert res.accuracy == pytest.approx(2 / 3) and res.pass_at_k[3] == pytest.approx(2 / 3)
    assert res.greedy_accuracy is None and "greedy_accuracy" not in res.summary()
    # a token limit shorter than the answer: no box, not finished
    short = evaluate_records(
        model, tok, RECORDS[:1], EvalConfig(SamplingConfig(max_new_tokens=3)), verifier=Verifier(num_workers=0)
    )
    assert short.samples[0]["finished"] is False and short.samples[0]["extracted"] is None and short.truncated_fraction == 1.0


def test_evaluate_records_rejects_bad_input(oracle):
    model, tok = oracle
    with pytest.raises(ValueError, match="temperature 0"):
        evaluate_records(model, tok, RECORDS, EvalConfig(SamplingConfig(k=4)))
    with pytest.raises(DataError, match=r"record 1 \(id x\): column 'answer'"):
        evaluate_records(model, tok, [RECORDS[0], {"id": "x", "problem": "p", "answer": ""}])
    with pytest.raises(DataError, match=r"record 0 \(id q\): guided evaluation needs a non-empty 'strategy'"):
        evaluate_records(model, tok, [{"id": "q", "problem": "p", "answer": "1"}], EvalConfig(guided=True))


def test_backend_selection_without_a_gpu(monkeypatch):
    """auto never chooses vLLM without a GPU, even when installed; asked for by name it runs on the
    CPU build (vllm's presence and the GPU are faked here; tests/test_vllm_eval_extract.py runs it)."""
    import sgpo.evaluation.generation as generation

    monkeypatch.setattr(generation, "vllm_installed", lambda: True)
    monkeypatch.setattr(generation, "cuda_available", lambda: False)
    assert select_backend("auto", "some/model") == "hf"
    assert select_backend("vllm", "some/model") == "vllm"
    with pytest.raises(RuntimeError, match="the model must be given as a path"):
        select_backend("vllm", object())
    monkeypatch.setattr(generation, "vllm_installed", lambda: False)
    with pytest.raises(RuntimeError, match="vllm is not installed"):
        select_backend("vllm", "some/model")
    monkeypatch.setattr(generation, "vllm_installed", lambda: True)
    # with a (mocked) GPU and vllm present, auto picks vLLM for a path, never for a loaded model
    monkeypatch.setattr(generation, "cuda_available", lambda: True)
    assert select_backend("auto", "some/model") == "vllm"
    assert select_backend("auto", object()) == "hf"
    assert select_backend("hf", "some/model") == "hf"
    with pytest.raises(ValueError, match="unknown generation backend"):
        select_backend("tgi", "m")


def test_markdown_table_lists_every_benchmark_and_the_average():
    entry = {
        "n": 30,
        "k": 4,
        "accuracy": 0.25,
        "ci95": [0.1, 0.4],
        "pass_at_k": {"1": 0.25, "2": 0.4, "4": 0.5},
        "num_timeouts": 1,
        "mean_completion_tokens": 812.4,
        "greedy_accuracy": 0.3,
    }
    other = dict(entry, n=40, accuracy=0.75, pass_at_k={"1": 0.75, "2": 0.8, "4": 0.9})
    doc = {"benchmarks": {"aime24": entry, "amc23": other}}
    doc["average"] = average(doc["benchmarks"])
    table = markdown_table(doc).splitlines()
    assert table[0] == "| benchmark | n | avg@4 | 95% CI | pass@2 | pass@4 | greedy | timeouts | mean tokens |"
    assert table[2] == "| aime24 | 30 | 25.0 | 10.0–40.0 | 40.0 | 50.0 | 30.0 | 1 | 812 |"
    assert table[4].startswith("| **average** |  | 50.0 |  | 60.0 | 70.0 |")
    json.dumps(doc)  # JSON-ready


def test_prompt_format_resolution(tmp_path):
    from sgpo.commands.eval import build_parser
    from sgpo.evaluation.options import prompt_format_from_args

    model = tmp_path / "model"
    model.mkdir()
    args = build_parser().parse_args(["--model", str(model), "--benchmark", "b"])
    fmt, origin = prompt_format_from_args(args)
    assert origin == "built-in" and "\\boxed{{}}" in fmt.template
    # a format saved next to the weights is used, and single options override it
    (model / "prompt_format.json").write_text(
        json.dumps(
            {
                "template": "{problem}\nanswer in \\boxed{{}} .",
                "guided_template": "{problem}\nstrategy :\n{strategy}\n.",
                "use_chat_template": False,
            }
        )
    )
    fmt, origin = prompt_format_from_args(args)
    assert origin == str(model / "prompt_format.json") and fmt.template == "{problem}\nanswer in \\boxed{{}} ."
    assert fmt.use_chat_template is False
    args = build_parser().parse_args(["--model", str(model), "--benchmark", "b", "--system-prompt", "be brief"])
    fmt, origin = prompt_format_from_args(args)
    assert fmt.system_prompt == "be brief" and fmt.use_chat_template is False and origin.endswith("+ command-line options")
    (model / "prompt_format.json").write_text(json.dumps({"templat": "{problem}"}))
    with pytest.raises(ValueError, match="unknown \\['templat'\\]"):
        prompt_format_from_args(args)
