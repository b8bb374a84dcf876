"""Extraction against a scripted OpenAI-compatible server on loopback (real HTTP, real `openai` client):
every reply kind and failure mode, reruns, structured-output fallback, the API key, kill -9 and resume."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from sgpo.data import DataError, read_rows
from sgpo.strategies.base import ExtractorConfigError, Strategy
from sgpo.strategies.extraction import ExtractionConfig, extract_strategies
from sgpo.strategies.scripted_server import Drop, Fail, Reply, ScriptedServer

VALID = json.dumps(
    {"approach": "Use symmetry.", "key_insight": "Paired terms cancel.", "steps": ["Pair the terms.", "Sum the pairs."]}
)
LEAKY = json.dumps({"approach": "Compute the ratio.", "key_insight": "It is \\frac{3}{4}.", "steps": ["Divide."]})
BOXED = json.dumps({"approach": "Solve.", "key_insight": "Linear.", "steps": ["Write \\boxed{x}."]})
SAYS_17 = json.dumps({"approach": "Count.", "key_insight": "There are 17 cases.", "steps": ["Enumerate."]})
OPTS = dict(model="scripted-model", timeout=1.0, max_retries=2, retry_base=0.05, retry_cap=0.2)

# marker -> (actions, answer, expected status, expected reason, expected number of requests)
CASES = {
    "CASE-valid": ([Reply(VALID)], "5", "ok", None, 1),
    "CASE-prose": ([Reply("Sure, here it is:\n" + VALID + "\nHope it helps!")], "5", "ok", None, 1),
    "CASE-fenced": ([Reply("```json\n" + VALID + "\n```")], "5", "ok", None, 1),
    "CASE-malformed": ([Reply('{"approach": "a", "key_insight": "b", "steps": ["c",],}')], "5", "failed", "invalid_json", 1),
    "CASE-nojson": ([Reply("I am not sure what you mean.")], "5", "failed", "no_json", 1),
    "CASE-schema": ([Reply('{"approach": "a", "steps": ["c"]}')], "5", "failed", "schema", 1),
    "CASE-truncated": ([Reply('{"approach": "a", "key_in', finish_reason="length")], "5", "failed", "truncated", 1),
    "CASE-leak": ([Reply(LEAKY)], "0.75", "rejected", "leak_gold_answer", 1),
    "CASE-boxed": ([Reply(BOXED)], "5", "rejected", "leak_boxed", 1),
    "CASE-respans": ([Reply(SAYS_17)], None, "rejected", "leak_response_answer", 1),
    "CASE-429": ([Fail(429, {"Retry-After": "1"}), Reply(VALID)], "5", "ok", None, 2),
    "CASE-429-always": ([Fail(429, {"Retry-After": "0"})], "5", "failed", "rate_limited", 3),
    "CASE-slow": ([Reply(VALID, delay=2.5)], "5", "failed", "timeout", 3),
    "CASE-slow-once": ([Reply(VALID, delay=2.5), Reply(VALID)], "5", "ok", None, 2),
    "CASE-drop": ([Drop()], "5", "failed", "connection_error", 3),
    "CASE-drop-once": ([Drop(), Reply(VALID)], "5", "ok", None, 2),
    "CASE-400": ([Fail(400, message="bad request")], "5", "failed", "http_400", 3),  # 3 = one per response_format level
}
TRANSIENT = {"CASE-429-always", "CASE-slow", "CASE-drop"}
# (5xx answers: with response_format auto they first walk down the structured-output levels, which
# changes the whole run's level; see test_server_errors_... below)


def rows_for(markers):
    rows = []
    for i, m in enumerate(markers):
        answer = CASES[m][1]
        response = "We count carefully and get \\boxed{17}." if m == "CASE-respans" else f"Work for {m}. So \\boxed{{{answer}}}."
        row = {"id": f"r{i}", "problem": f"Problem {m}: find the value.", "response": response, "extra": i}
        if answer is not None:
            row["answer"] = answer
        rows.append(row)
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def extract_from(srv, inp, out, extractor=(), **config):
    """`extract_strategies` of `inp` into `out` against the scripted server `srv`; `extractor`: extractor
    options beside OPTS, `config`: `ExtractionConfig` fields."""
    return extract_strategies(
        inp,
        out,
        "openai",
        extractor_options=dict(OPTS, base_url=srv.base_url, **dict(extractor)),
        config=ExtractionConfig(**config),
        progress=False,
    )


def formats(srv, marker=None):
    """The response_format type of each request `srv` received (of `marker`'s only, when given)."""
    return [(r.body.get("response_format") or {}).get("type") for r in srv.requests if marker in (None, r.marker)]


def test_every_reply_kind_ends_as_it_should_and_reruns_redo_only_transient_failures(tmp_path):
    markers = list(CASES) + ["CASE-valid"]  # the last row duplicates the first one's content
    rows = rows_for(markers)
    rows[-1]["id"] = "dup"
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with ScriptedServer({m: c[0] for m, c in CASES.items()}) as srv:
        t0 = time.time()
        summary = extract_from(srv, inp, out, concurrency=6)
        wall = time.time() - t0
        for m, (_, _, _, _, n_requests) in CASES.items():
            assert srv.count(m) == n_requests, m
        # Retry-After honoured: the retry came >= 1 s after the 429 (the backoff alone would wait <= 0.2 s)
        t429 = [r.time for r in srv.requests if r.marker == "CASE-429"]
        assert t429[1] - t429[0] >= 1.0
        # the 400s walked down the structured-output levels, then failed the item
        assert formats(srv, "CASE-400") == ["json_schema", "json_object", None]
        # ...which did not downgrade the run: other items still asked for json_schema
        assert all(r.body["response_format"]["type"] == "json_schema" for r in srv.requests if r.marker != "CASE-400")
        assert all(r.body["model"] == "scripted-model" and r.body["temperature"] == 0.0 for r in srv.requests)
    assert wall < 20, wall

    got = read_rows(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]  # one row per input row, input order
    for r, m in zip(got, markers):
        _, _, status, reason, _ = CASES[m]
        assert (r["status"], r["reason"]) == (status, reason), (m, r["detail"])
        assert r["extra"] == rows[got.index(r)]["extra"]  # input columns are kept
        assert (r["strategy"] is not None) == (status == "ok")
        assert (r["detail"] is None) == (status == "ok")
        if status != "failed":
            Strategy.model_validate_json(r["strategy_json"])
        else:
            assert r["strategy_json"] is None
        assert (r["extractor"], r["extractor_model"], r["prompt_version"]) == ("openai", "scripted-model", "v1")
        assert len(r["content_hash"]) == 64
    ok = next(r for r in got if r["id"] == "r0")
    assert ok["strategy"].startswith("Approach: Use symmetry.\nKey insight: Paired terms cancel.\nSteps:\n1. Pair the terms.")
    assert got[-1]["content_hash"] == got[0]["content_hash"] and got[-1]["strategy"] == got[0]["strategy"]
    assert "0.75" in next(r for r in got if r["reason"] == "leak_gold_answer")["detail"]

    n_ok = sum(1 for c in CASES.values() if c[2] == "ok") + 1
    assert summary.rows == len(rows) and summary.unique_items == len(CASES) and summary.ok == n_ok
    assert summary.rejected == {"leak_gold_answer": 1, "leak_boxed": 1, "leak_response_answer": 1}
    assert summary.failed == {
        "invalid_json": 1,
        "no_json": 1,
        "schema": 1,
        "truncated": 1,
        "rate_limited": 1,
        "timeout": 1,
        "connection_error": 1,
        "http_400": 1,
    }

    # rerun against a healthy server: only the transient failures are asked again
    healthy = {m: [Reply(VALID)] for m in CASES}
    with ScriptedServer(healthy) as srv:
        s2 = extract_from(srv, inp, out)
        assert sorted({r.marker for r in srv.requests}) == sorted(TRANSIENT) and srv.count() == len(TRANSIENT)
    assert s2.from_cache == len(CASES) - len(TRANSIENT) and s2.processed == len(TRANSIENT)
    assert s2.ok == n_ok + len(TRANSIENT)
    assert set(s2.failed) == {"invalid_json", "no_json", "schema", "truncated", "http_400"}
    # --retry-failed redoes the rest; rejected items are final and not asked again
    with ScriptedServer(healthy) as srv:
        s3 = extract_from(srv, inp, out, retry_failed=True)
        assert sorted(r.marker for r in srv.requests) == [
            "CASE-400",
            "CASE-malformed",
            "CASE-nojson",
            "CASE-schema",
            "CASE-truncated",
        ]
    assert s3.failed == {} and sum(s3.rejected.values()) == 3 and s3.ok == len(rows) - 3
    assert len(read_rows(out)) == len(rows)


def test_server_errors_are_retried_with_a_fixed_response_format(tmp_path):
    script = {"CASE-500": [Fail(500), Reply(VALID)], "CASE-503-always": [Fail(503)]}
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": m, "problem": f"Problem {m}", "response": "R"} for m in script])
    with ScriptedServer(script) as srv:
        s = extract_from(srv, inp, tmp_path / "o.jsonl", extractor={"response_format": "json_object"})
        assert srv.count("CASE-500") == 2 and srv.count("CASE-503-always") == 3  # max_retries 2
    assert s.ok == 1 and s.failed == {"server_error": 1}


def test_a_5xx_on_the_schema_falls_back_at_once_and_sticks(tmp_path):
    # issue 20: a real vLLM server whose xgrammar backend cannot compile the schema answers HTTP 500 to
    # every json_schema request; each row used to be retried 6 times (71 s for 6 rows) and end server_error
    inp = write_jsonl(tmp_path / "in.jsonl", [{"problem": f"P{i}", "response": "R \\boxed{9}"} for i in range(6)])
    with ScriptedServer(default=Reply(VALID), reject_response_formats={"json_schema": 500}) as srv:
        t0 = time.time()
        s, kinds = extract_from(srv, inp, tmp_path / "o.jsonl", concurrency=1), formats(srv)
        wall = time.time() - t0
    assert s.ok == 6 and s.failed == {}
    assert kinds == ["json_schema"] + ["json_object"] * 6  # one 500, then json_object for the rest of the run
    assert wall < 5, wall  # no backoff waits


def test_structured_output_falls_back_once_and_sticks(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"problem": f"P{i}", "response": "R \\boxed{9}"} for i in range(4)])
    with ScriptedServer(default=Reply(VALID), reject_response_formats={"json_schema"}) as srv:
        s, kinds = extract_from(srv, inp, tmp_path / "o.jsonl", concurrency=1), formats(srv)
        schema = srv.requests[0].body["response_format"]["json_schema"]["schema"]
    assert s.ok == 4
    assert kinds == ["json_schema", "json_object", "json_object", "json_object", "json_object"]
    assert set(schema["required"]) == {"approach", "key_insight", "steps"}
    with ScriptedServer(default=Reply(VALID), reject_response_formats={"json_schema", "json_object"}) as srv:
        s, kinds = extract_from(srv, inp, tmp_path / "o2.jsonl", concurrency=1), formats(srv)
    assert s.ok == 4 and kinds == ["json_schema", "json_object", None, None, None, None]


def test_auth_error_stops_the_run_and_keeps_finished_items(tmp_path):
    rows = [{"id": i, "problem": f"P{i}" + (" CASE-auth" if i >= 3 else ""), "response": "R"} for i in range(6)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "o.jsonl"
    with ScriptedServer({"CASE-auth": [Fail(401, message="invalid api key")]}, default=Reply(VALID)) as srv:
        with pytest.raises(ExtractorConfigError, match="HTTP 401.*check --base-url, --model and the API key"):
            extract_from(srv, inp, out, concurrency=1)
    assert not out.exists()
    with ScriptedServer(default=Reply(VALID)) as srv:
        s = extract_from(srv, inp, out, concurrency=1)
        assert srv.count() == 3  # the three finished before the 401 were kept
    assert s.ok == 6 and s.from_cache == 3


def test_bad_input_names_rows_and_columns_before_any_request(tmp_path):
    rows = [
        {"id": "a", "problem": "P", "response": "R"},
        {"id": "b", "problem": "P2"},
        {"id": "c", "problem": "", "response": "R", "answer": [1]},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    with ScriptedServer() as srv:
        with pytest.raises(DataError) as err:
            extract_from(srv, inp, tmp_path / "o.jsonl")
        assert srv.count() == 0
    msg = str(err.value)
    assert "in.jsonl: 3 bad row(s)" in msg
    assert "row 1 (id 'b'): missing column 'response'" in msg
    assert "row 2 (id 'c'): column 'problem' must be a non-empty string, got empty" in msg
    assert "row 2 (id 'c'): column 'answer' must be a string or a number, got a list" in msg
    with pytest.raises(DataError, match="output must end in"):
        extract_strategies(inp, tmp_path / "o.csv", "openai", extractor_options=OPTS)


def _run_cli(args, env_extra=None, **kw):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "sgpo", "extract", *args], env=env, capture_output=True, text=True, **kw)


def test_cli_api_key_comes_from_env_and_is_never_written(tmp_path):
    secret = "sk-test-5ecret-do-not-leak"
    inp = write_jsonl(tmp_path / "in.jsonl", rows_for(["CASE-valid", "CASE-malformed"]))
    out = tmp_path / "out.parquet"
    with ScriptedServer({m: CASES[m][0] for m in ("CASE-valid", "CASE-malformed")}) as srv:
        proc = _run_cli(
            [
                "--input",
                str(inp),
                "--output",
                str(out),
                "--base-url",
                srv.base_url,
                "--model",
                "m",
                "--api-key-env",
                "MY_KEY",
                "--summary-json",
                str(tmp_path / "summary.json"),
                "--no-progress",
            ],
            env_extra={"MY_KEY": secret},
            timeout=120,
        )
        auths = {r.authorization for r in srv.requests}
    assert proc.returncode == 0, proc.stderr
    assert auths == {f"Bearer {secret}"}
    assert "ok        1" in proc.stderr and "failed    1  (invalid_json 1)" in proc.stderr
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in proc.stdout + proc.stderr
    got = read_rows(out)  # parquet output
    assert [r["status"] for r in got] == ["ok", "failed"]
    assert json.loads((tmp_path / "summary.json").read_text())["failed"] == {"invalid_json": 1}


def test_cli_selects_an_extractor_by_import_path(tmp_path):
    # a rule-based extractor (like the strategy world's), found through PYTHONPATH by module:Class
    (tmp_path / "my_rules.py").write_text(
        "from sgpo.strategies import Extractor, ExtractionError, Strategy\n"
        "class Rules(Extractor):\n"
        "    name = 'rules'\n"
        "    def __init__(self, word='invariant'):\n"
        "        self.word = word\n"
        "    def extract(self, problem, response, answer=None):\n"
        "        if 'parity' not in response:\n"
        "            raise ExtractionError('no_rule', 'no known method in the response')\n"
        "        return Strategy(approach='Use a parity ' + self.word + '.', key_insight='Parity is preserved.', steps=['Track parity.'])\n"
    )
    rows = [
        {"problem": "P1", "response": "by parity, \\boxed{0}", "answer": "0"},
        {"problem": "P2", "response": "guess", "answer": "4"},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = _run_cli(
        [
            "--input",
            str(inp),
            "--output",
            str(out),
            "--backend",
            "my_rules:Rules",
            "--backend-arg",
            "word=argument",
            "--timeout",
            "5",
        ],
        env_extra=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "extract: 2/2 (100.0%)" in proc.stderr and "items/s ETA" in proc.stderr  # progress line (not a terminal)
    got = read_rows(out)
    assert [(r["status"], r["reason"]) for r in got] == [("ok", None), ("failed", "no_rule")]
    assert got[0]["strategy"].startswith("Approach: Use a parity argument.")
    assert (got[0]["extractor"], got[0]["extractor_model"], got[0]["prompt_version"]) == ("rules", None, None)
    bad = _run_cli(
        ["--input", str(inp), "--output", str(out), "--backend", "my_rules:Rules", "--backend-arg", "colour=red"],
        env_extra=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "takes no option(s) colour" in bad.stderr
    unknown = _run_cli(["--input", str(inp), "--output", str(out), "--frobnicate"], timeout=60)
    assert unknown.returncode == 2 and "unrecognized arguments: --frobnicate" in unknown.stderr


def test_kill_minus_9_then_rerun_gives_every_row_exactly_once(tmp_path):
    n = 40
    rows = [
        {
            "id": f"item-{i}",
            "problem": f"Problem number {i}",
            "response": f"Solution {i}: \\boxed{{{i + 100}}}",
            "answer": str(i + 100),
        }
        for i in range(n)
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    args = [
        "--input",
        str(inp),
        "--output",
        str(out),
        "--cache",
        str(cache),
        "--model",
        "m",
        "--concurrency",
        "2",
        "--no-progress",
    ]

    def done_count():
        if not cache.exists():
            return 0
        try:
            with sqlite3.connect(cache, timeout=5) as db:
                return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.OperationalError:  # table not created yet
            return 0

    with ScriptedServer(latency=0.1) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sgpo", "extract", *args, "--base-url", srv.base_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 60
        while done_count() < 10 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        first_requests = srv.count()
    done = done_count()
    assert 10 <= done < n, done
    assert not out.exists()  # the output is only written at the end
    assert first_requests >= done
    with ScriptedServer(latency=0.01) as srv:
        proc = _run_cli([*args, "--base-url", srv.base_url], timeout=120)
        assert proc.returncode == 0, proc.stderr
        # finished items are not asked again; the ones in flight at the kill are
        assert srv.count() == n - done
        asked = {r.body["messages"][1]["content"].split("Problem:\n")[1].split("\n")[0] for r in srv.requests}
    got = read_rows(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert all(r["status"] == "ok" for r in got)
    assert len(asked) == n - done
    assert done_count() == n


def _closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_stops_at_once_when_nothing_listens_at_the_endpoint(tmp_path, capsys):
    from sgpo.cli import main

    inp = write_jsonl(tmp_path / "in.jsonl", rows_for(["CASE-valid", "CASE-prose", "CASE-fenced"]))
    out = tmp_path / "out.jsonl"
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    rc = main(
        [
            "extract",
            "--input",
            str(inp),
            "--output",
            str(out),
            "--base_url",
            url,
            "--model",
            "m",
            "--max-retries",
            "1",
            "--retry-base",
            "0.01",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    (line,) = [x for x in err.splitlines() if x.strip()]  # one line, no traceback, no per-item failures
    assert line.startswith(f"sgpo extract: error: cannot reach {url}") and "is the server running?" in line
    assert not out.exists()
    with sqlite3.connect(tmp_path / "out.jsonl.cache.sqlite") as db:  # no item was attempted
        assert db.execute("select count(*) from results").fetchone()[0] == 0


def test_cli_exit_status_is_1_when_every_item_failed(tmp_path, capsys):
    from sgpo.cli import main

    inp = write_jsonl(tmp_path / "in.jsonl", rows_for(["CASE-valid", "CASE-prose"]))
    args = ["extract", "--input", str(inp), "--model", "m", "--max-retries", "0", "--no-progress"]
    with ScriptedServer(default=Fail(500)) as srv:  # the endpoint answers, but every request fails
        rc = main([*args, "--output", str(tmp_path / "all.jsonl"), "--base-url", srv.base_url])
    err = capsys.readouterr().err
    assert rc == 1 and "sgpo extract: error: every item failed (server_error 2)" in err
    assert [r["reason"] for r in read_rows(tmp_path / "all.jsonl")] == ["server_error", "server_error"]
    with ScriptedServer({"CASE-prose": [Fail(500)]}) as srv:  # one of two fails: a normal run
        rc = main([*args, "--output", str(tmp_path / "some.jsonl"), "--base-url", srv.base_url])
    assert rc == 0 and "sgpo extract: error" not in capsys.readouterr().err
