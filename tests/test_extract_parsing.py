"""Pure parts of extraction: prompts, tolerant JSON parsing, backoff timing, content hashes, registry."""

import email.utils
import json
import random
import sys

import pytest

from sgpo.strategies.base import ExtractionError, Extractor, ExtractorConfigError, Strategy, render_strategy
from sgpo.strategies.parsing import balanced_objects, parse_strategy, strip_reasoning
from sgpo.strategies.prompt import PROMPTS, get_prompt
from sgpo.strategies.registry import accepted_options, build_extractor, resolve_backend
from sgpo.strategies.retry import RetryPolicy, parse_retry_after
from sgpo.strategies.store import ResultStore, content_hash

GOOD = {
    "approach": "Complete the square.",
    "key_insight": "A quadratic is a shifted square.",
    "steps": ["Group x terms.", "Add and subtract the square."],
}


# -- prompts ------------------------------------------------------------------------------------------
def test_prompt_v1_keeps_braces_and_names_the_schema():
    prompt = get_prompt("v1")
    msgs = prompt.messages("Solve $x^{2} = {4}$ for {x}.", "We get \\boxed{2}.", answer="2")
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "Solve $x^{2} = {4}$ for {x}." in user and "We get \\boxed{2}." in user
    assert "{problem}" not in user and "{response}" not in user
    for field in ("approach", "key_insight", "steps", "pitfalls"):
        assert f'"{field}"' in user
    assert "never state the final answer" in user
    schema = prompt.json_schema()
    assert set(schema["required"]) == {"approach", "key_insight", "steps"}


def test_unknown_prompt_version_lists_known_ones():
    with pytest.raises(ValueError, match="known: v1"):
        get_prompt("v9")
    assert set(PROMPTS) >= {"v1"}


# -- parsing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
        "Sure! Here is the strategy:\n" + json.dumps(GOOD) + "\nLet me know if you need more.",
        "<think>maybe {not this} ... </think>\n" + json.dumps(GOOD),
        "I reasoned a lot about {braces}.</think>" + json.dumps(GOOD),  # template opened the think block
        json.dumps({"strategy": GOOD}),
        'First try: {"approach": 1}. Final: ' + json.dumps(GOOD),  # the first valid object wins
    ],
)
def test_tolerant_parsing_accepts(reply):
    s = parse_strategy(reply)
    assert s.approach == GOOD["approach"] and s.steps == GOOD["steps"] and s.pitfalls == []


@pytest.mark.parametrize(
    "reply, finish, reason, detail_part",
    [
        ("", "stop", "empty_response", ""),
        (None, None, "empty_response", ""),
        ("I cannot help with that.", "stop", "no_json", "no JSON object"),
        ('{"approach": "a", "key_insight": "b", "steps": ["c",]}', "stop", "invalid_json", "Expecting value"),
        ('{"approach": "a", "key_insight": "b", "ste', "length", "truncated", "reply starts"),
        # json's own message ends in "at": the position reads "(line 1, column 34)", not "at at line 1"
        ('{"approach": "a", "key_insight": "b', "length", "truncated", "Unterminated string starting at (line 1, column 34)"),
        (
            '{"approach": "a", "steps": "one step"}',
            "stop",
            "schema",
            "key_insight: Field required; steps: Input should be a valid list",
        ),
        ('{"approach": " ", "key_insight": "b", "steps": ["c", ""]}', "stop", "schema", "empty field(s): approach, steps.1"),
        ('{"approach": "a", "key_insight": "b", "steps": []}', "stop", "schema", "steps (no steps)"),
        ('<think>{"approach": "a", "key_insight": "b", "steps": ["c"]} still thinking', "length", "no_json", ""),
    ],
)
def test_parsing_failures_have_reasons(reply, finish, reason, detail_part):
    with pytest.raises(ExtractionError) as err:
        parse_strategy(reply, finish)
    assert err.value.reason == reason
    assert detail_part in err.value.detail


def test_balanced_objects_ignores_braces_in_strings():
    text = 'a {"x": "}{", "y": {"z": 1}} b {"w": 2} {unclosed'
    assert list(balanced_objects(text)) == ['{"x": "}{", "y": {"z": 1}}', '{"w": 2}']


def test_strip_reasoning():
    assert strip_reasoning("<think>a</think>B<think>c") == "B"
    assert strip_reasoning("plain") == "plain"


def test_blank_pitfalls_dropped_and_fields_stripped():
    s = parse_strategy(json.dumps({**GOOD, "approach": "  Complete the square. ", "pitfalls": ["", " Sign errors. "]}))
    assert s.approach == "Complete the square." and s.pitfalls == ["Sign errors."]
    assert render_strategy(s).splitlines()[-2:] == ["Pitfalls:", "- Sign errors."]


# -- retry timing --------------------------------------------------------------------------------------
class FixedRandom(random.Random):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def random(self):
        return self.value


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(base=1.0, cap=10.0)
    # bound b = min(cap, base * 2**n); wait = b * (0.5 + 0.5 * u)
    # n=0, u=0 -> 1 * 0.5 = 0.5;  n=2, u=1 -> 4 * 1.0 = 4.0;  n=5, u=0.5 -> min(10, 32) * 0.75 = 7.5
    assert policy.delay(0, rng=FixedRandom(0.0)) == pytest.approx(0.5)
    assert policy.delay(2, rng=FixedRandom(1.0)) == pytest.approx(4.0)
    assert policy.delay(5, rng=FixedRandom(0.5)) == pytest.approx(7.5)
    # Retry-After is a lower bound: max(jittered 0.5, 3.0) = 3.0, and max(4.0, 0.1) = 4.0
    assert policy.delay(0, retry_after=3.0, rng=FixedRandom(0.0)) == pytest.approx(3.0)
    assert policy.delay(2, retry_after=0.1, rng=FixedRandom(1.0)) == pytest.approx(4.0)


def test_parse_retry_after():
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "7"}) == 0.25
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30.0)
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


# -- content hash and store ----------------------------------------------------------------------------
def test_content_hash_is_canonical():
    assert content_hash("p", {"b": 1, "a": 2}) == content_hash("p", {"a": 2, "b": 1})
    assert content_hash("p", "r", None) != content_hash("p", "r", "")
    assert len(content_hash("x")) == 64


def test_store_replaces_never_duplicates(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResultStore(path) as store:
        store.put("k1", {"v": 1})
        store.put_many({"k1": {"v": 2}, "k2": {"v": 3}})
        assert len(store) == 2
    with ResultStore(path) as store:  # reopened: committed data is there
        assert store.get_many(["k1", "k2", "k3"]) == {"k1": {"v": 2}, "k2": {"v": 3}}
    (tmp_path / "bad.sqlite").write_text("not a database")
    with pytest.raises(ValueError, match="not a usable result cache"):
        ResultStore(tmp_path / "bad.sqlite")


# -- registry -------------------------------------------------------------------------------------------
class Echo(Extractor):
    name = "echo"

    def __init__(self, prefix: str = ">"):
        self.prefix = prefix

    def extract(self, problem, response, answer=None):
        return Strategy(approach=self.prefix + problem, key_insight="k", steps=["s"])


def test_registry_resolves_names_and_import_paths(monkeypatch):
    assert resolve_backend("openai").__name__ == "OpenAICompatExtractor"
    ex = build_extractor(f"{__name__}:Echo", model="ignored", timeout=3)  # shared options it does not take are dropped
    assert isinstance(ex, Echo) and ex.prefix == ">"
    ex = build_extractor(f"{__name__}:Echo", strict_options={"prefix": "#"})
    assert ex.extract("p", "r").approach == "#p"
    with pytest.raises(ExtractorConfigError, match="takes no option"):
        build_extractor(f"{__name__}:Echo", strict_options={"colour": "red"})
    with pytest.raises(ExtractorConfigError, match="unknown backend 'nope'"):
        resolve_backend("nope")
    with pytest.raises(ExtractorConfigError, match="cannot import module"):
        resolve_backend("no_such_module_xyz:Thing")
    with pytest.raises(ExtractorConfigError, match="not a subclass"):
        resolve_backend("json:JSONDecoder")
    with pytest.raises(ExtractorConfigError, match="missing a required argument: 'model'"):
        build_extractor("openai", timeout=5)
    assert accepted_options(lambda a, **kw: None, {"a": 1, "b": None, "c": 2}) == {"a": 1, "c": 2}


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch):
    # No GPU / vLLM here: only the error path of the in-process vLLM backend can be tested. vLLM is made
    # unimportable (sys.modules entry None) so the test means the same where vLLM is installed.
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ExtractorConfigError, match=r"pip install 'sgpo\[vllm\]'"):
        build_extractor("vllm", model="some/model")


def test_python_api_with_an_extractor_instance_and_a_list_input(tmp_path):
    from sgpo.data import read_rows
    from sgpo.strategies.extraction import ExtractionConfig, extract_strategies

    class Flaky(Echo):
        name = "flaky"
        closed = False

        def extract(self, problem, response, answer=None):
            if "bad" in response:
                raise ExtractionError("no_rule", "nothing to read")
            if "bug" in response:
                raise KeyError("oops")  # an unexpected error is recorded, not fatal
            return super().extract(problem, response, answer)

        def close(self):
            self.closed = True

    rows = [
        {"problem": "p1", "response": "fine"},
        {"problem": "p2", "response": "bad"},
        {"problem": "p3", "response": "bug", "answer": 3},
    ]
    ex = Flaky(prefix="Use ")
    summary = extract_strategies(rows, tmp_path / "o.jsonl", ex, config=ExtractionConfig(concurrency=2), progress=False)
    got = read_rows(tmp_path / "o.jsonl")
    assert [(r["status"], r["reason"]) for r in got] == [("ok", None), ("failed", "no_rule"), ("failed", "extractor_error")]
    assert got[2]["detail"] == "KeyError: 'oops'"
    assert got[0]["strategy"].startswith("Approach: Use p1") and got[0]["extractor"] == "flaky"
    assert summary.failed == {"no_rule": 1, "extractor_error": 1} and not ex.closed  # the caller's instance stays open
