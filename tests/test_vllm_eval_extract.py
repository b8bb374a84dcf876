"""The evaluation harness's and the extractor's vLLM paths on CPU, for real, through the real entry
points (`sgpo eval --backend vllm`, `sgpo extract --backend vllm`), with tiny models built here whose
head dimension (32) vLLM's CPU attention runs. Each command starts its own in-process engine and
frees it when it finishes."""

import json

import pytest

from conftest import require_vllm
from test_extract_serve import BLOB, ROWS, STRATEGY
from test_extract_tiny import build_tokenizer, teach

require_vllm()

from sgpo.cli import main as sgpo_main  # noqa: E402
from sgpo.data import read_rows, write_rows  # noqa: E402
from sgpo.strategies.backends.transformers_local import chat_prompt  # noqa: E402
from sgpo.strategies.prompt import get_prompt  # noqa: E402
from sgpo.testing import build_vllm_tiny_model, tiny_arithmetic_rows  # noqa: E402


@pytest.fixture(scope="module")
def eval_model(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("policy")
    build_vllm_tiny_model(tokenizer, seed=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = folder / "problems.jsonl"
    write_rows(data, tiny_arithmetic_rows(6))
    return folder, data


def run_eval(model, data, out, *extra) -> dict:
    code = sgpo_main(
        [
            "eval",
            "--model",
            str(model),
            "--benchmark",
            f"tiny={data}",
            "--out",
            str(out),
            "--max-new-tokens",
            "8",
            "--workers",
            "1",
            *extra,
        ]
    )
    assert code == 0
    return json.loads((out / "results.json").read_text())


def samples(out) -> list[dict]:
    return read_rows(out / "samples" / "tiny.jsonl")


def test_eval_vllm_backend_decodes_greedily_as_the_hf_backend(eval_model, tmp_path):
    model, data = eval_model
    vllm_doc = run_eval(model, data, tmp_path / "vllm", "--backend", "vllm")
    hf_doc = run_eval(model, data, tmp_path / "hf", "--backend", "hf")
    assert vllm_doc["settings"]["backend"] == "vllm" and hf_doc["settings"]["backend"] == "hf"
    got, want = samples(tmp_path / "vllm"), samples(tmp_path / "hf")
    assert len(got) == 6
    # same prompts (chat template), same greedy continuations, same stopping and token counts
    for a, b in zip(got, want):
        assert (a["prompt"], a["completion"], a["completion_tokens"], a["finished"]) == (
            b["prompt"],
            b["completion"],
            b["completion_tokens"],
            b["finished"],
        )
    assert any(s["completion"] for s in got)


def test_eval_vllm_backend_samples_k_per_problem_reproducibly(eval_model, tmp_path):
    model, data = eval_model
    args = ["--backend", "vllm", "--k", "4", "--temperature", "0.7", "--seed", "5"]
    doc = run_eval(model, data, tmp_path / "a", *args)
    again = run_eval(model, data, tmp_path / "b", *args)
    entry = doc["benchmarks"]["tiny"]
    assert entry["n"] == 6 and entry["k"] == 4
    first, second = samples(tmp_path / "a"), samples(tmp_path / "b")
    assert [s["sample_index"] for s in first[:4]] == [0, 1, 2, 3]
    # a seed makes a run repeatable, and the k samples of a problem differ from each other
    assert [s["completion"] for s in first] == [s["completion"] for s in second]
    assert len({s["completion"] for s in first[:4]}) > 1


@pytest.fixture(scope="module")
def rigged_extractor(tmp_path_factory):
    """A Llama (word-level tokenizer, head_dim 32) taught to answer every extraction prompt with one
    fixed strategy JSON, emitted as a single added token (as in test_extract_serve)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    corpus = [get_prompt().system, get_prompt().user_template] + [r["problem"] + " " + r["response"] for r in ROWS]
    tok = build_tokenizer(corpus, added=[BLOB])
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    prompts = [chat_prompt(tok, get_prompt().messages(r["problem"], r["response"])) for r in ROWS]
    teach(model, tok, [(p, BLOB) for p in prompts])
    folder = tmp_path_factory.mktemp("extractor")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_extract_vllm_backend_with_guided_decoding(rigged_extractor, tmp_path):
    rows = tmp_path / "in.jsonl"
    write_rows(rows, ROWS)
    out = tmp_path / "out.jsonl"
    code = sgpo_main(
        [
            "extract",
            "--input",
            str(rows),
            "--output",
            str(out),
            "--backend",
            "vllm",
            "--model",
            str(rigged_extractor),
            "--max-tokens",
            "16",
            "--no-progress",
        ]
    )
    assert code == 0
    got = read_rows(out)
    # the JSON-schema grammar admits the taught reply; the leak filter then rejects the two rows whose
    # answer (1/2) the strategy states, as with every other backend
    assert [(r["status"], r["reason"]) for r in got] == [
        ("rejected", "leak_gold_answer"),
        ("ok", None),
        ("rejected", "leak_response_answer"),
        ("ok", None),
    ], [r["detail"] for r in got]
    assert got[1]["extractor"] == "vllm"
    assert json.loads(got[1]["strategy_json"]) == {**STRATEGY, "pitfalls": []}


def test_extract_vllm_after_torch_was_set_to_one_thread(rigged_extractor, tmp_path):
    # A fresh process that set torch to 1 thread before the engine starts (as the strategy world's
    # pipeline does for determinism): vLLM's CPU attention then aborted the process on the first
    # structured-output request ("Check failed: ...thread_num == thread_num (2 vs. 1)"); the engine
    # now starts with torch's threads set to the process's cores. Needs ≥ 2 cores to mean anything.
    import os
    import subprocess
    import sys
    from pathlib import Path

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: torch's thread count cannot differ from vLLM's")
    rows = tmp_path / "in.jsonl"
    write_rows(rows, ROWS)
    out = tmp_path / "out.jsonl"
    script = "import sys, torch; torch.set_num_threads(1); from sgpo.cli import main; sys.exit(main(sys.argv[1:]))"
    src = str(Path(__file__).parents[1] / "src")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "extract",
            "--input",
            str(rows),
            "--output",
            str(out),
            "--backend",
            "vllm",
            "--model",
            str(rigged_extractor),
            "--max-tokens",
            "16",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["status"] for r in read_rows(out)] == ["rejected", "ok", "rejected", "ok"]
