"""The strategy world's problems, oracle solutions, critical spans and extracted strategies."""

from __future__ import annotations

import re

import pytest

from sgpo.data import load_problems, read_rows
from sgpo.strategies.base import ExtractionError, Strategy, render_strategy
from sgpo.verify import Verifier
from sgpo.world.extractor import WorldExtractor, fill_strategies
from sgpo.world.families import FAMILIES, FAMILY_BY_NAME
from sgpo.world.generate import SPLITS, WorldSpec, build_world, write_world

SMALL = WorldSpec(per_family={"heldout": 6, "train": 5, "warmup": 12, "validation": 4})


def reference_answer(problem: str) -> int:
    """An independent solver, written from the problem text alone (not from the families' traces)."""
    question, _, tail = problem.rpartition("list :")
    xs = [int(t) for t in tail.split()]
    q = question.strip()
    if q in FAMILY_BY_NAME["max"].questions:
        return max(xs)
    if q in FAMILY_BY_NAME["min"].questions:
        return min(xs)
    if q in FAMILY_BY_NAME["sum_mod10"].questions:
        return sum(xs) % 10
    if q in FAMILY_BY_NAME["count_rises"].questions:
        return sum(1 for a, b in zip(xs, xs[1:]) if b > a)
    if q in FAMILY_BY_NAME["count_even"].questions:
        return sum(1 for x in xs if x % 2 == 0)
    (target,) = [int(t) for t in q.split() if t.isdigit()]
    assert re.sub(r"\d", "{target}", q) in FAMILY_BY_NAME["count_target"].questions
    return xs.count(target)


def test_world_is_a_function_of_the_seed():
    assert build_world(3, SMALL) == build_world(3, SMALL)
    assert build_world(3, SMALL)["heldout"] != build_world(4, SMALL)["heldout"]


def test_splits_are_disjoint_balanced_and_a_smaller_world_is_a_prefix():
    world = build_world(0, SMALL)
    problems = [r["problem"] for split in SPLITS for r in world[split]]
    assert len(problems) == len(set(problems))
    ids = [r["id"] for split in SPLITS for r in world[split]]
    assert len(ids) == len(set(ids))
    for split in SPLITS:
        counts = {f.name: sum(r["family"] == f.name for r in world[split]) for f in FAMILIES}
        assert set(counts.values()) == {SMALL.per_family[split]}
    smaller = build_world(0, WorldSpec(per_family={"heldout": 2, "train": 1, "warmup": 1}))
    assert smaller["heldout"] == world["heldout"][: 2 * len(FAMILIES)]


def test_the_validation_split_is_built_last_and_only_when_asked_for():
    """`sgpo experiment` adds a validation split; the demo's world (no validation) keeps its problems."""
    demo_spec = WorldSpec(per_family={k: v for k, v in SMALL.per_family.items() if k != "validation"})
    demo, full = build_world(0, demo_spec), build_world(0, SMALL)
    assert list(demo) == ["heldout", "train", "warmup"] and list(full) == [*demo, "validation"]
    assert all(demo[s] == full[s] for s in demo)
    assert len(full["validation"]) == 4 * len(FAMILIES)


def test_at_least_six_families_with_integer_answers():
    assert len(FAMILIES) >= 6
    for r in build_world(1, SMALL)["heldout"]:
        assert re.fullmatch(r"-?\d+", r["answer"])


def test_oracle_answers_are_correct_on_many_seeds():
    rows = [r for seed in range(40) for r in build_world(seed, SMALL)["heldout"]]
    assert len(rows) == 40 * 6 * len(FAMILIES)
    for r in rows:
        assert int(r["answer"]) == reference_answer(r["problem"]), r
    with Verifier(num_workers=0) as verifier:
        checks = verifier.check([r["response"] for r in rows], [str(reference_answer(r["problem"])) for r in rows])
    assert all(c.correct for c in checks)


def test_critical_spans_mark_the_method_phrase_and_only_it():
    for r in build_world(2, SMALL)["train"]:
        fam = FAMILY_BY_NAME[r["family"]]
        spans = r["critical_spans"]
        assert len(spans) == 1
        (start, end) = spans[0]
        assert 0 <= start < end <= len(r["response"])
        assert r["response"][start:end] == fam.method
        # the method phrase occurs once: the choice of procedure shows nowhere else in the text
        assert r["response"].count(fam.method) == 1


def test_family_is_inferable_from_the_problem_text():
    """No question paraphrase is shared between families, so an ideal policy can tell them apart."""
    seen = {}
    for fam in FAMILIES:
        for q in fam.questions:
            assert q not in seen, (q, fam.name, seen.get(q))
            seen[q] = fam.name
        assert fam.method not in " ".join(fam.questions)  # the question does not name the procedure


def test_extractor_parses_every_family_into_abstract_strategies():
    extractor = WorldExtractor()
    rows = [r for seed in range(5) for r in build_world(seed, SMALL)["train"]]
    by_family: dict[str, set[str]] = {}
    for r in rows:
        s = extractor.extract(r["problem"], r["response"], r["answer"])
        assert isinstance(s, Strategy) and s.approach and s.key_insight and s.steps
        fields = [s.approach, s.key_insight, *s.steps, *s.pitfalls]
        for text in fields:
            assert not re.search(r"\d", text), text  # no instance number, hence never the answer
        by_family.setdefault(r["family"], set()).add(render_strategy(s))
    # one reusable strategy per family, different across families
    assert set(by_family) == {f.name for f in FAMILIES}
    assert all(len(v) == 1 for v in by_family.values())
    assert len({next(iter(v)) for v in by_family.values()}) == len(FAMILIES)


def test_rendered_strategy_never_holds_the_answer_or_list_numbers():
    for r in fill_strategies(build_world(7, SMALL)["heldout"]):
        numbers = {t for t in r["problem"].split() if t.isdigit()}
        block_words = set(re.findall(r"\S+", r["strategy"]))
        # render_strategy numbers the steps "1." "2." "3."; those are the only digits
        assert {w for w in block_words if re.search(r"\d", w)} <= {"1.", "2.", "3."}
        assert not (numbers | {r["answer"]}) & block_words


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p, s: (p, s.replace("method :", "way :")), "unparsable"),
        (lambda p, s: (p, s.replace("running maximum", "running median")), "unknown_method"),
        (lambda p, s: (p.replace("list : 3", "list : 4"), s), "inconsistent_trace"),
        (lambda p, s: (p, s.replace("running maximum", "running minimum")), "inconsistent_trace"),
        (lambda p, s: (p, s.replace("\\boxed{9}", "\\boxed{7}")), "inconsistent_answer"),
    ],
)
def test_extractor_rejects_bad_responses(mutate, reason):
    problem = "which value is the biggest ? list : 3 7 1 9 4"
    response = "method : running maximum . 3>3 7>7 1>7 9>9 4>9 . answer : \\boxed{9}"
    WorldExtractor().extract(problem, response, "9")  # the unmutated pair parses
    p, s = mutate(problem, response)
    with pytest.raises(ExtractionError) as err:
        WorldExtractor().extract(p, s, "9")
    assert err.value.reason == reason


def test_extractor_checks_the_restated_target():
    problem = "how many times does 3 appear ? list : 3 7 3"
    response = "method : running count of the target . target : 3 . 3>1 7>1 3>2 . answer : \\boxed{2}"
    strategy = WorldExtractor().extract(problem, response, "2")
    assert "target" in strategy.approach
    for bad in (response.replace("target : 3", "target : 7"), response.replace("target : 3 . ", "")):
        with pytest.raises(ExtractionError) as err:
            WorldExtractor().extract(problem, bad, "2")
        assert err.value.reason in ("inconsistent_trace", "unparsable")


def test_extractor_rejects_a_wrong_answer_and_names_the_row():
    rows = build_world(0, SMALL)["train"][:3]
    WorldExtractor().extract(rows[1]["problem"], rows[1]["response"], rows[1]["answer"])
    bad = [dict(r) for r in rows]
    bad[1]["answer"] = str(int(bad[1]["answer"]) + 1)
    with pytest.raises(ExtractionError) as err:
        fill_strategies(bad)
    assert err.value.reason == "wrong_answer"
    assert f"row 1 (id {bad[1]['id']!r})" in str(err.value)


def test_records_are_in_the_project_data_format(tmp_path):
    world = {s: fill_strategies(rows) for s, rows in build_world(0, SMALL).items()}
    paths = write_world(tmp_path, world)
    assert read_rows(paths["train"]) == world["train"]
    ds = load_problems(paths["heldout"], require_strategy=True)
    assert len(ds) == len(world["heldout"])
    assert {"id", "problem", "answer", "strategy", "response", "family", "critical_spans"} <= set(ds.column_names)
