"""Extraction against a real `transformers serve` process on loopback, and with the in-process
transformers backend, using tiny models built here (no hub access).

Two local models are served by one server (transformers serve loads a model on first request, by the
`model` field, which may be a local folder; with HF_HUB_OFFLINE=1 nothing is fetched):
- `rigged`: taught to answer every chat prompt with one fixed strategy JSON (a single added token);
- `random`: untrained, its replies are nonsense.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sgpo.data import read_rows
from sgpo.strategies.backends.transformers_local import chat_prompt
from sgpo.strategies.extraction import ExtractionConfig, extract_strategies
from sgpo.strategies.prompt import get_prompt

from test_extract_tiny import build_model, build_tokenizer, teach

STRATEGY = {
    "approach": "Split the whole into equal parts.",
    "key_insight": "Each part is $\\frac{1}{2}$ of the whole.",
    "steps": ["Name the whole.", "Halve it.", "Check the parts are equal."],
}
BLOB = json.dumps(STRATEGY)
FAILED_REASONS = {"no_json", "invalid_json", "truncated", "schema", "empty_response"}
OUTPUT_COLUMNS = {
    "status",
    "reason",
    "detail",
    "strategy",
    "strategy_json",
    "extractor",
    "extractor_model",
    "prompt_version",
    "content_hash",
}

ROWS = [
    # gold 0.5: the strategy's \frac{1}{2} gives it away
    {
        "id": "half",
        "problem": "What fraction is one of two equal parts?",
        "response": "One of two parts: \\boxed{0.5}",
        "answer": "0.5",
    },
    {"id": "quarter", "problem": "What fraction is one of four equal parts?", "response": "So \\boxed{1/4}.", "answer": "1/4"},
    # no gold answer; the response's final answer 1/2 is in the strategy
    {"id": "resp", "problem": "Split a cake between two people.", "response": "Each gets \\boxed{\\dfrac{1}{2}}."},
    {"id": "plain", "problem": "Describe a fair split.", "response": "Give everyone the same amount."},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory, request):
    if "serve" in request.fixturenames:
        request.getfixturevalue("serve_process")  # start the server first, build the models meanwhile
    root = tmp_path_factory.mktemp("models")
    corpus = [get_prompt().system, get_prompt().user_template] + [r["problem"] + " " + r["response"] for r in ROWS]
    tok = build_tokenizer(corpus, added=[BLOB])
    paths = {}
    for name in ("rigged", "random"):
        model = build_model(tok, seed=1)
        if name == "rigged":
            prompts = [chat_prompt(tok, get_prompt().messages(r["problem"], r["response"])) for r in ROWS]
            teach(model, tok, [(p, BLOB) for p in prompts])
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve_process(tmp_path_factory):
    """Starts `transformers serve` (no model pinned: it loads the one a request names) without waiting,
    so its start-up overlaps with building the models."""
    exe = Path(sys.executable).parent / "transformers"
    assert exe.exists(), f"{exe} not found: install the test extra (transformers[serving])"
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    yield proc, f"http://127.0.0.1:{port}", log
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def serve(serve_process, models):
    proc, base, log = serve_process
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return base + "/v1"
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"transformers serve did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def _write(tmp_path, rows):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _check_well_formed(got, rows, model_path):
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for r in got:
        assert OUTPUT_COLUMNS <= set(r)
        assert r["status"] in {"ok", "rejected", "failed"}
        assert (r["strategy"] is None) == (r["status"] != "ok")
        assert r["extractor_model"] == str(model_path) and r["prompt_version"] == "v1"
        if r["status"] == "failed":
            assert r["reason"] in FAILED_REASONS and r["detail"], r
            assert r["strategy_json"] is None


def _extract(tmp_path, out_name, backend, model_path, **options):
    out = tmp_path / out_name
    summary = extract_strategies(
        _write(tmp_path, ROWS),
        out,
        backend,
        extractor_options={"model": str(model_path), **options},
        config=ExtractionConfig(concurrency=2),
        progress=False,
    )
    got = read_rows(out)
    _check_well_formed(got, ROWS, model_path)
    return summary, got


def test_transformers_serve_rigged_model_gives_ok_and_leak_rejections(serve, models, tmp_path):
    summary, got = _extract(tmp_path, "out.jsonl", "openai", models["rigged"], base_url=serve, timeout=60, max_tokens=16)
    assert [(r["status"], r["reason"]) for r in got] == [
        ("rejected", "leak_gold_answer"),
        ("ok", None),
        ("rejected", "leak_response_answer"),
        ("ok", None),
    ], [r["detail"] for r in got]
    assert json.loads(got[1]["strategy_json"]) == {**STRATEGY, "pitfalls": []}
    assert got[1]["strategy"].startswith("Approach: Split the whole into equal parts.\nKey insight: Each part is $\\frac{1}{2}$")
    assert summary.ok == 2 and summary.rejected == {"leak_gold_answer": 1, "leak_response_answer": 1}


def test_transformers_serve_nonsense_model_fails_with_reasons(serve, models, tmp_path):
    summary, got = _extract(tmp_path, "out.parquet", "openai", models["random"], base_url=serve, timeout=60, max_tokens=24)
    # nonsense can only end as ok (by luck) or failed with a reason; never crash, never a missing row
    assert all(r["status"] in ("ok", "failed") for r in got), [(r["status"], r["reason"]) for r in got]
    assert summary.rows == len(ROWS) and summary.ok + sum(summary.failed.values()) == len(ROWS)


def test_in_process_transformers_backend(models, tmp_path):
    summary, got = _extract(tmp_path, "out.jsonl", "transformers", models["rigged"], device="cpu", max_tokens=16, batch_size=3)
    assert [r["status"] for r in got] == ["rejected", "ok", "rejected", "ok"]
    assert got[0]["extractor"] == "transformers"
    summary, got = _extract(tmp_path, "nonsense.jsonl", "transformers", models["random"], device="cpu", max_tokens=6)
    assert all(r["status"] in ("ok", "failed") for r in got)
