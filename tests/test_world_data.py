"""The strategy world's problems, oracle solutions, critical spans and extracted strategies."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from sgpo.data import load_problems, read_rows
from sgpo.strategies.base import ExtractionError, Strategy, render_strategy
from sgpo.verify import Verifier
from sgpo.world.extractor import WorldExtractor, fill_strategies
from sgpo.world.families import FAMILIES, FAMILY_BY_NAME, WORLDS, Instance, families_named
from sgpo.world.generate import GENERALISATION_SPLITS, WorldSpec, build_world, write_world

SPLIT_SIZES = {"heldout": 6, "train": 5, "warmup": 12, "validation": 4, "novel": 3, "longer": 3}
SMALL = WorldSpec(per_family=SPLIT_SIZES)  # the default world: v2
SMALL_V1 = WorldSpec(per_family={k: v for k, v in SPLIT_SIZES.items() if k not in GENERALISATION_SPLITS}, families="v1")
SMALL_V2_1 = WorldSpec(
    per_family=SPLIT_SIZES, families="v2.1", longer_length=(9, 10), warmup_length=(5, 10)
)  # as world_v2_1.yaml
SMALL_V2_4 = WorldSpec(
    per_family=SPLIT_SIZES, families="v2.4", longer_length=(9, 10), warmup_length=(5, 10)
)  # as world_v2_4.yaml
V2_KEEP = {  # an independent statement of v2's filters (position i counts from 0)
    "sum": lambda x, i: True,
    "sum_even": lambda x, i: x % 2 == 0,
    "sum_odd": lambda x, i: x % 2 == 1,
    "sum_big": lambda x, i: x >= 5,
    "sum_small": lambda x, i: x <= 4,
    "sum_alt": lambda x, i: i % 2 == 0,
}


def spec_of(world: str) -> WorldSpec:
    return {"v2": SMALL, "v2.1": SMALL_V2_1, "v2.4": SMALL_V2_4, "v1": SMALL_V1}[world]


def reference_answer(problem: str) -> int:
    """An independent solver, written from the problem text alone (not from the families' traces)."""
    question, _, tail = problem.rpartition("list :")
    xs = [int(t) for t in tail.split()]
    q = question.strip()
    for fam in WORLDS["v2"] + WORLDS["v2.1"] + WORLDS["v2.4"]:
        if q in fam.questions + fam.novel_questions:
            keep = V2_KEEP[fam.name]
            return sum(x for i, x in enumerate(xs) if keep(x, i))
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


def test_the_v1_world_is_the_first_world_bit_for_bit():
    """v2 became the default beside v1, which must still build exactly what it built before (the
    experiments measured on it stay reproducible): the hash of this world at 091a801."""
    import hashlib
    import json

    world = build_world(0, WorldSpec(per_family={"heldout": 6, "train": 5, "warmup": 12, "validation": 4}, families="v1"))
    digest = hashlib.sha256(json.dumps(world, sort_keys=True).encode()).hexdigest()
    assert digest == "5665fefc235de2373e2290528cc400471f41ba477d407ee74d368d48e1ab2372"


def test_the_v2_world_and_its_swapped_solutions_are_unchanged_bit_for_bit_by_v2_1():
    """v2.1 shares v2's family names; v2 (its gate measured at 7f4b5b4) must still build exactly
    what it built then, its warm-up's swapped solutions included (the hash at 7f4b5b4)."""
    import hashlib
    import json

    from sgpo.world.warmup import swapped_record

    world = build_world(0, SMALL)
    swapped = [swapped_record(r) for r in fill_strategies(world["warmup"])]
    digest = hashlib.sha256(json.dumps([world, swapped], sort_keys=True).encode()).hexdigest()
    assert digest == "8c092655f92719bab0a06e19df0d6a1daf5bf1ef409dc1b660fa190df363a592"


def test_world_is_a_function_of_the_seed():
    assert build_world(3, SMALL) == build_world(3, SMALL)
    assert build_world(3, SMALL)["heldout"] != build_world(4, SMALL)["heldout"]


@pytest.mark.parametrize("world", ["v1", "v2", "v2.1", "v2.4"])
def test_splits_are_disjoint_balanced_and_a_smaller_world_is_a_prefix(world):
    spec = spec_of(world)
    built = build_world(0, spec)
    families = WORLDS[world]
    problems = [r["problem"] for split in spec.splits for r in built[split]]
    assert len(problems) == len(set(problems))
    ids = [r["id"] for split in spec.splits for r in built[split]]
    assert len(ids) == len(set(ids))
    for split in spec.splits:
        counts = {f.name: sum(r["family"] == f.name for r in built[split]) for f in families}
        assert set(counts.values()) == {spec.per_family[split]}
    smaller = build_world(0, WorldSpec(per_family={"heldout": 2, "train": 1, "warmup": 1}, families=spec.families))
    assert smaller["heldout"] == built["heldout"][: 2 * len(families)]


def test_the_validation_split_is_built_last_and_only_when_asked_for():
    """`sgpo experiment` adds a validation split; the demo's world (no validation) keeps its problems."""
    demo_spec = WorldSpec(per_family={k: v for k, v in SMALL.per_family.items() if k in ("heldout", "train", "warmup")})
    demo, full = build_world(0, demo_spec), build_world(0, SMALL)
    assert list(demo) == ["heldout", "train", "warmup"] and list(full) == [*demo, "validation", "novel", "longer"]
    assert all(demo[s] == full[s] for s in demo)
    assert len(full["validation"]) == 4 * len(FAMILIES)


@pytest.mark.parametrize("world_name", ["v2", "v2.1", "v2.4"])
def test_the_generalisation_split_is_worded_differently_or_longer_than_any_training_instance(world_name):
    """v2: `longer` is longer than any other split's list; v2.1: than any list but the warm-up's,
    which spans the longer lengths (`warmup_length`)."""
    world = build_world(0, spec_of(world_name))
    by_name = {f.name: f for f in WORLDS[world_name]}
    trained = ("heldout", "train", "validation") + (("warmup",) if world_name == "v2" else ())
    seen = [r for s in trained for r in world[s]]
    question = lambda r: r["problem"].rpartition("list :")[0].strip()  # noqa: E731
    length = lambda r: len(r["problem"].rpartition("list :")[2].split())  # noqa: E731
    trained_questions = {question(r) for r in seen}
    longest = max(length(r) for r in seen)
    for r in world["novel"]:  # a wording no other split asks, of the problem's own family
        assert question(r) not in trained_questions | {question(r) for r in world["warmup"]}
        assert question(r) in by_name[r["family"]].novel_questions
        assert length(r) <= longest
    for r in world["longer"]:  # a usual wording, a list longer than any other split's
        assert question(r) in trained_questions and length(r) > longest
    with pytest.raises(ValueError, match="longer"):
        WorldSpec(per_family={"longer": 1}, list_length=(5, 9), longer_length=(9, 9))
    with pytest.raises(ValueError, match="novel_questions"):
        WorldSpec(per_family={"novel": 1}, families="v1")


def test_at_least_six_families_with_integer_answers():
    assert len(FAMILIES) >= 6
    for r in build_world(1, SMALL)["heldout"]:
        assert re.fullmatch(r"-?\d+", r["answer"])


@pytest.mark.parametrize("world", ["v1", "v2", "v2.1", "v2.4"])
def test_oracle_answers_are_correct_on_many_seeds(world):
    spec = spec_of(world)
    rows = [r for seed in range(40) for split in spec.splits if split != "warmup" for r in build_world(seed, spec)[split]]
    assert len(rows) == 40 * len(WORLDS[world]) * sum(n for s, n in spec.per_family.items() if s != "warmup")
    for r in rows:
        assert int(r["answer"]) == reference_answer(r["problem"]), r
    with Verifier(num_workers=0) as verifier:
        checks = verifier.check([r["response"] for r in rows], [str(reference_answer(r["problem"])) for r in rows])
    assert all(c.correct for c in checks)


def test_v2_solutions_draw_every_step_notation_and_v1_keeps_one():
    steps = [t for r in build_world(0, SMALL)["train"] for t in r["response"].split(" . ")[1].split()]
    marks = [re.fullmatch(r"\d+([>=:])\d+", t).group(1) for t in steps]
    counts = {m: marks.count(m) for m in ">=:"}
    assert min(counts.values()) > 0.25 * len(marks), counts  # each of the three about a third of the steps
    v1_steps = [t for r in build_world(0, SMALL_V1)["train"] for t in r["response"].split(" . ")[-2].split()]
    assert all(">" in t and "=" not in t and ":" not in t for t in v1_steps)


@pytest.mark.parametrize("world", ["v1", "v2", "v2.1", "v2.4"])
def test_critical_spans_mark_the_method_phrase_and_only_it(world):
    for r in build_world(2, spec_of(world))["train"]:
        fam = FAMILY_BY_NAME[r["family"]]
        spans = r["critical_spans"]
        assert len(spans) == 1
        (start, end) = spans[0]
        assert 0 <= start < end <= len(r["response"])
        assert r["response"][start:end] == fam.method
        # the method phrase occurs once: the choice of procedure shows nowhere else in the text
        assert r["response"].count(fam.method) == 1


@pytest.mark.parametrize("world", ["v1", "v2", "v2.1", "v2.4"])
def test_family_is_inferable_from_the_problem_text(world):
    """No question paraphrase is shared between families of a world, so an ideal policy can tell them apart."""
    seen = {}
    for fam in WORLDS[world]:
        for q in fam.questions + fam.novel_questions:
            assert q not in seen, (q, fam.name, seen.get(q))
            seen[q] = fam.name
        assert fam.method not in " ".join(fam.questions)  # the question does not name the procedure


def test_v2_1_changes_only_notations_and_held_out_wordings_and_those_use_seen_words():
    """v2.1 is v2 but for what failed v2's gate (docs/results.md): six notations, and held-out
    wordings made of words some training wording of the same world uses (v2's had words no
    training text has: untrained embeddings)."""
    for old, new in zip(WORLDS["v2"], WORLDS["v2.1"]):
        assert (old.name, old.method, old.questions, old.approach, old.insight, old.update_rule) == (
            new.name, new.method, new.questions, new.approach, new.insight, new.update_rule,
        )  # fmt: skip
        assert [old.answer(Instance((3, 8, 1, 6, 5))), old.answer(Instance((0, 9, 4)))] == [
            new.answer(Instance((3, 8, 1, 6, 5))), new.answer(Instance((0, 9, 4))),
        ]  # fmt: skip
        assert len(new.notations) == 6 and set(old.notations) < set(new.notations)
        assert new.novel_questions != old.novel_questions
    for world, expect_unseen in (("v2", True), ("v2.1", False)):
        seen_words = {w for f in WORLDS[world] for q in f.questions for w in q.split()}
        unseen = {w for f in WORLDS[world] for q in f.novel_questions for w in q.split()} - seen_words
        assert bool(unseen) == expect_unseen, (world, unseen)


def test_v2_1_draws_six_notations_and_its_warm_up_spans_the_longer_lengths():
    world = build_world(0, SMALL_V2_1)
    steps = [t for r in world["train"] + world["warmup"] for t in r["response"].split(" . ")[1].split()]
    marks = [re.fullmatch(r"\d+([>=:~|/])\d+", t).group(1) for t in steps]
    counts = {m: marks.count(m) for m in ">=:~|/"}
    assert min(counts.values()) > 0.12 * len(marks), counts  # each of the six about a sixth of the steps
    length = lambda r: len(r["problem"].rpartition("list :")[2].split())  # noqa: E731
    assert {length(r) for r in world["warmup"]} <= set(range(5, 11)) and max(length(r) for r in world["warmup"]) >= 9
    for split in ("heldout", "train", "validation", "novel"):
        assert max(length(r) for r in world[split]) <= 8, split
    assert {length(r) for r in world["longer"]} <= {9, 10}
    assert SMALL_V2_1.to_dict()["warmup_length"] == [5, 10] and "warmup_length" not in SMALL.to_dict()
    with pytest.raises(ValueError, match="warmup_length"):
        WorldSpec(per_family={"warmup": 1}, warmup_length=(6, 5))


@pytest.mark.parametrize("world", ["v1", "v2", "v2.1", "v2.4"])
def test_extractor_parses_every_family_into_abstract_strategies(world):
    FAMILIES = WORLDS[world]  # noqa: N806
    extractor = WorldExtractor()
    rows = [r for seed in range(5) for r in build_world(seed, spec_of(world))["train"]]
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


def test_the_v2_1_world_and_its_swapped_solutions_are_unchanged_bit_for_bit_by_v2_4():
    """v2.4 shares v2.1's family names; v2.1 (its gate measured at 849b608) must still build exactly
    what it built then, its warm-up's swapped solutions included (the hash at 047de9a)."""
    import hashlib
    import json

    from sgpo.world.warmup import swapped_record

    world = build_world(0, SMALL_V2_1)
    swapped = [swapped_record(r, WORLDS["v2.1"]) for r in fill_strategies(world["warmup"])]
    digest = hashlib.sha256(json.dumps([world, swapped], sort_keys=True).encode()).hexdigest()
    assert digest == "b3f97206a70e6005a350bef51669e130ffd70693f65b7a27259e1d11de91581a"


def test_v2_4_is_v2_1_with_a_separator_drawn_between_every_two_steps():
    """v2.4 changes one thing of v2.1 (docs/results.md, "World v2.4"): what stands between two steps
    is drawn from a space, `,` and `;` (each about a third of the gaps), one token either way."""
    for old, new in zip(WORLDS["v2.1"], WORLDS["v2.4"]):
        assert replace(new, separators=old.separators) == old and old.separators == (" ",)
        assert new.separators == (" ", ",", ";")
    world = build_world(0, SMALL_V2_4)
    traces = [r["response"].split(" . ")[1] for r in world["train"] + world["warmup"]]
    seps = [m for t in traces for m in re.findall(r"\d([ ,;])\d", t)]
    assert len(seps) == sum(len(re.findall(r"\d[>=:~|/]\d+", t)) - 1 for t in traces)  # one per gap
    counts = {m: seps.count(m) for m in " ,;"}
    assert min(counts.values()) > 0.28 * len(seps), counts
    # the names and methods of v2.4 map to v2.4's families, whose notations and separators include the
    # older worlds': the extractor parses solutions of any of them
    assert all(FAMILY_BY_NAME[f.name] is f for f in WORLDS["v2.4"])
    # a list of family names is the default world's families (v2), not the newest world's
    assert families_named(["sum", "max"]) == [WORLDS["v2"][0], FAMILY_BY_NAME["max"]]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p, s: (p, s.replace("method :", "way :")), "unparsable"),
        (lambda p, s: (p, s.replace("running maximum", "running median")), "unknown_method"),
        (lambda p, s: (p.replace("list : 3", "list : 4"), s), "inconsistent_trace"),
        (lambda p, s: (p, s.replace("running maximum", "running minimum")), "inconsistent_trace"),
        (lambda p, s: (p, s.replace("\\boxed{9}", "\\boxed{7}")), "inconsistent_answer"),
        (lambda p, s: (p, s.replace("7>7", "7=7")), "unparsable"),
        (lambda p, s: (p, s.replace("3>3 7>7", "3>3,7>7")), "unparsable"),
    ],
)
def test_extractor_rejects_bad_responses(mutate, reason):
    # a v1 solution; the last cases: a notation and a separator v1's oracle never writes
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
