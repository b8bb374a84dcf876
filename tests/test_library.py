"""The strategy library: build (merging near-duplicates), the on-disk format and its schema check,
retrieval on hand-made libraries whose right answer is known, the leak filter on retrieved strategies,
every bad-input case, re-ranking by a taught tiny policy, and the CLI through the real entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from sgpo.cli import main as cli_main
from sgpo.data import DataError, read_rows
from sgpo.library import BuildConfig, LibraryError, RerankConfig, RetrievalConfig, StrategyLibrary
from sgpo.library.similarity import leader_clusters
from sgpo.strategies.base import Strategy, render_strategy

SQUARE = Strategy(
    approach="Complete the square",
    key_insight="A quadratic is a shifted square",
    steps=["Group the x terms", "Add and subtract the square of half the coefficient"],
    pitfalls=["Sign errors when moving terms"],
)
# one word more than SQUARE: TF-IDF cosine 0.942 with it in the first build below (>= 0.9: merged)
SQUARE2 = Strategy(
    approach="Complete the square",
    key_insight="A quadratic is a shifted square",
    steps=["Group the x terms", "Add and subtract the square of half the linear coefficient"],
    pitfalls=["Sign errors when moving terms"],
)
COMPLEMENT = Strategy(
    approach="Count complementary outcomes",
    key_insight="P(at least one) is one minus P(none)",
    steps=["Compute the probability that nothing happens", "Subtract it from one"],
)
CYCLE = Strategy(
    approach="Find the cycle of powers",
    key_insight="Powers repeat modulo the divisor",
    steps=["List the first powers modulo the divisor", "Reduce the exponent modulo the cycle length"],
)
# a remainder strategy that quotes its own problem's answer (4): it leaks where the target's answer is 4
CYCLE_LEAKY = Strategy(
    approach="Use Fermat's little theorem on the power",
    key_insight="In the worked case the remainder comes out as 4",
    steps=["Reduce the base modulo the divisor", "Apply the theorem to the exponent"],
)

Q1 = "Solve x^2 + 6x + 5 = 0 by completing the square."
Q2 = "Solve x^2 - 8x + 7 = 0 by completing the square."
P1 = "A fair coin is tossed 5 times. What is the probability of getting at least one head?"
R1 = "What is the remainder when 2^100 is divided by 7?"
R2 = "Find the remainder of 3^40 divided by 11."


def row(pid, problem, strategy, answer="1", status="ok", reason=None, score=None):
    r = {
        "id": pid,
        "problem": problem,
        "answer": answer,
        "status": status,
        "reason": reason,
        "strategy": render_strategy(strategy) if status == "ok" else None,
        "strategy_json": strategy.model_dump_json(),
        "extractor": "hand",
        "extractor_model": None,
        "prompt_version": None,
        "content_hash": f"h-{pid}",
    }
    if score is not None:
        r["strategy_score"] = score
    return r


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


LIBRARY_ROWS = [
    row("q1", Q1, SQUARE, "-1"),
    row("q2", Q2, SQUARE2, "1"),
    row("p1", P1, COMPLEMENT, "31/32"),
    # scored: in R1's index row the leaky entry comes before the clean one (better score first)
    row("r1", R1, CYCLE_LEAKY, "2", score=0.5),
    row("r1", R1, CYCLE, "2"),
    row("r2", R2, CYCLE, "1"),
    row("q3", "Solve x^2 = 4.", SQUARE, "2", status="rejected", reason="leak_gold_answer"),
    row("q4", "Solve x^2 = 9.", SQUARE, "3", status="failed", reason="schema"),
]


@pytest.fixture
def library_file(tmp_path):
    return write_jsonl(tmp_path / "strategies.jsonl", LIBRARY_ROWS)


@pytest.fixture
def library(library_file):
    lib, _ = StrategyLibrary.build([library_file])
    return lib


# ------------------------------------------------------------------------------------------ build
def test_build_keeps_ok_rows_and_merges_near_duplicates(library_file):
    lib, summary = StrategyLibrary.build([library_file])
    # SQUARE2 merged into SQUARE (cosine 0.94 >= 0.9); COMPLEMENT, CYCLE, CYCLE_LEAKY distinct
    assert [e.strategy for e in lib.entries] == [render_strategy(s) for s in (SQUARE, COMPLEMENT, CYCLE_LEAKY, CYCLE)]
    square = lib.entries[0]
    assert square.merged_variants == [render_strategy(SQUARE2)]
    assert square.problems == ["q1", "q2"] and square.num_rows == 2
    assert [(p["source"], p["row"], p["content_hash"]) for p in square.provenance] == [
        (str(library_file), 0, "h-q1"),
        (str(library_file), 1, "h-q2"),
    ]
    cycle = lib.entries[3]
    assert cycle.problems == ["r1", "r2"] and cycle.num_rows == 2
    # the index: one row per distinct problem, with its entries
    assert [(p.problem_id, len(p.entries)) for p in lib.problems] == [("q1", 1), ("q2", 1), ("p1", 1), ("r1", 2), ("r2", 1)]
    assert summary.used == 6 and summary.rows == 8 and summary.distinct_texts == 5 and summary.entries == 4
    assert summary.skipped == {"rejected: leak_gold_answer": 1, "failed: schema": 1} and summary.invalid == []
    assert "merged    1  of 5 distinct strategy texts" in summary.format()

    # a threshold above 1 merges only identical texts: SQUARE2 is its own entry
    lib2, summary2 = StrategyLibrary.build([library_file], BuildConfig(merge_threshold=1.01))
    assert summary2.entries == 5 and lib2.entries[1].strategy == render_strategy(SQUARE2)


def test_entry_text_is_the_best_scored_variant(tmp_path):
    rows = [
        row("a", Q1, SQUARE, score=0.25),
        row("b", Q2, SQUARE2, score=0.75),
        row("c", Q2, SQUARE2, score=0.25),
        row("d", P1, COMPLEMENT),
    ]
    lib, _ = StrategyLibrary.build([rows])
    square = lib.entries[0]
    # mean score of SQUARE2's two rows = 0.5 > SQUARE's 0.25: SQUARE2 is the entry's text, SQUARE a variant
    assert square.strategy == render_strategy(SQUARE2) and square.score == pytest.approx(0.5) and square.num_scored == 2
    assert square.merged_variants == [render_strategy(SQUARE)] and square.num_rows == 3
    assert lib.entries[1].score is None and lib.entries[1].num_scored == 0


def test_leader_clustering_does_not_chain():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    texts = ["alpha beta gamma delta", "alpha beta gamma epsilon", "alpha beta zeta epsilon"]
    sims = cosine_similarity(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts))
    # the premise: 0~1 and 1~2 at 0.35, but not 0~2 (0.55, 0.39, 0.24)
    assert sims[0, 1] > 0.35 and sims[1, 2] > 0.35 and sims[0, 2] < 0.35
    assert leader_clusters(texts, 0.35) == [0, 0, 1]  # single linkage would give [0, 0, 0]
    assert leader_clusters(texts, 0.2) == [0, 0, 0]
    assert leader_clusters(texts, 0.6) == [0, 1, 2]
    assert leader_clusters([], 0.9) == []


# ------------------------------------------------------------------------------------------ format
def test_save_load_roundtrip_and_plain_files(library, tmp_path):
    folder = library.save(tmp_path / "lib")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema"] == 1 and manifest["format"] == "sgpo-strategy-library"
    assert manifest["entries"] == 4 and manifest["problems"] == 5
    assert manifest["retrieval"]["method"] == "tfidf-cosine" and manifest["merge"]["threshold"] == 0.9
    # readable with json alone: every entry's strategy is the rendering of its strategy_json
    entries = [json.loads(line) for line in (folder / "entries.jsonl").read_text().splitlines()]
    index = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]
    assert [e["id"] for e in entries] == [e.id for e in library.entries]
    assert render_strategy(Strategy(**json.loads(entries[0]["strategy_json"]))) == entries[0]["strategy"]
    assert index[3]["problem_id"] == "r1" and index[3]["entries"] == [entries[2]["id"], entries[3]["id"]]
    again = StrategyLibrary.load(folder)
    assert again.entries == library.entries and again.problems == library.problems
    # an existing folder is not replaced without overwrite
    with pytest.raises(LibraryError, match="already exists"):
        library.save(folder)
    library.save(folder, overwrite=True)


def test_other_schema_and_non_libraries_are_refused(library, tmp_path):
    folder = library.save(tmp_path / "lib")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "schema": 2}))
    with pytest.raises(LibraryError) as err:
        StrategyLibrary.load(folder)
    assert "library schema 2 is not supported (this sgpo reads schema 1)" in str(err.value) and "\n" not in str(err.value)
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format": "something"}))
    with pytest.raises(LibraryError, match="not a strategy library manifest"):
        StrategyLibrary.load(folder)
    with pytest.raises(LibraryError, match="not a strategy library \\(no manifest.json\\)"):
        StrategyLibrary.load(tmp_path)
    with pytest.raises(LibraryError, match="no such library folder"):
        StrategyLibrary.load(tmp_path / "missing")


def test_malformed_library_files_name_file_line_and_field(library, tmp_path):
    folder = library.save(tmp_path / "lib")
    lines = (folder / "entries.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    bad["strategy_json"] = json.dumps({"approach": "x", "key_insight": "y"})  # no steps
    (folder / "entries.jsonl").write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    with pytest.raises(
        LibraryError, match=r"entries.jsonl: line 2: field 'strategy_json' is not a valid strategy \(steps: Field required\)"
    ):
        StrategyLibrary.load(folder)
    (folder / "entries.jsonl").write_text("\n".join(lines) + "\n")
    index = (folder / "index.jsonl").read_text().replace(library.entries[0].id, "s-nowhere", 1)
    (folder / "index.jsonl").write_text(index)
    with pytest.raises(LibraryError, match="index.jsonl: problem 'q1' names unknown entry 's-nowhere'"):
        StrategyLibrary.load(folder)


def test_empty_library_is_refused(tmp_path, library):
    rejected = [r for r in LIBRARY_ROWS if r["status"] != "ok"]
    with pytest.raises(LibraryError, match=r"no usable strategy in .*\(2 rows: .*\): the library would be empty"):
        StrategyLibrary.build([write_jsonl(tmp_path / "rejected.jsonl", rejected)])
    folder = library.save(tmp_path / "lib")
    (folder / "entries.jsonl").write_text("")
    with pytest.raises(LibraryError, match="the library is empty \\(0 entries"):
        StrategyLibrary.load(folder)


def test_invalid_rows_are_reported_per_row_never_dropped(tmp_path):
    no_json = {**row("a", Q1, SQUARE)}
    del no_json["strategy_json"]
    bad_schema = {**row("b", Q2, SQUARE), "strategy_json": json.dumps({"approach": "x", "key_insight": "y", "steps": []})}
    edited = {**row("c", P1, COMPLEMENT), "strategy": "Approach: something else"}
    dup_id = row("q1", "Another problem entirely.", CYCLE)
    bad_score = row("e", R2, CYCLE, score="high")
    good = row("q1", Q1, SQUARE)
    path = write_jsonl(tmp_path / "mixed.jsonl", [good, no_json, bad_schema, edited, dup_id, bad_score])
    with pytest.raises(DataError) as err:
        StrategyLibrary.build([path])
    msg = str(err.value)
    assert msg.startswith("5 invalid row(s)")
    for expected in (
        f"{path}: row 1 (id 'a'): field 'strategy_json': missing",
        f"{path}: row 2 (id 'b'): field 'strategy_json': not a valid strategy (empty field(s): steps (no steps))",
        f"{path}: row 3 (id 'c'): field 'strategy': is not the rendering of 'strategy_json'",
        f"{path}: row 4 (id 'q1'): field 'id': duplicate problem id 'q1' names another problem (first in {path} row 0)",
        f"{path}: row 5 (id 'e'): field 'strategy_score': must be a number, got a str",
    ):
        assert expected in msg
    lib, summary = StrategyLibrary.build([path], BuildConfig(skip_invalid=True))
    assert len(summary.invalid) == 5 and summary.used == 1 and [e.problems for e in lib.entries] == [["q1"]]
    assert "invalid   5  (listed above)" in summary.format()


# ------------------------------------------------------------------------------------------ retrieval
TARGETS = [
    {"id": "t-square", "problem": "Solve x^2 - 4x - 12 = 0 by completing the square.", "answer": "6"},
    {
        "id": "t-prob",
        "problem": "A die is rolled 3 times. What is the probability of getting at least one six?",
        "answer": "91/216",
    },
    {"id": "t-rem", "problem": "What is the remainder when 5^30 is divided by 7?", "answer": "1"},
    {"id": "t-own", "problem": "Find the remainder of 3^20 divided by 11.", "answer": "1", "strategy": "Approach: my own"},
    {"id": "t-far", "problem": "Name a capital city in Europe.", "answer": "Paris"},
]


def test_retrieval_finds_the_right_entries(library):
    result = library.retrieve(TARGETS, RetrievalConfig(k=2, min_similarity=0.2))
    by_id = {r["id"]: r for r in result.rows}
    square, complement, leaky, cycle = (e.id for e in library.entries)
    assert by_id["t-square"]["strategy_entry"] == square and by_id["t-square"]["strategy"] == render_strategy(SQUARE)
    assert by_id["t-prob"]["strategy_entry"] == complement and by_id["t-prob"]["strategy_match"] == "p1"
    # R1 is the nearest problem; its entries come in index order (scored leaky first): gold 1 is not in its text
    assert by_id["t-rem"]["strategy_entry"] == leaky and [c["entry"] for c in by_id["t-rem"]["retrieval_candidates"]] == [
        leaky,
        cycle,
    ]
    for r in result.rows[:3]:
        assert r["strategy_source"] == "retrieved" and r["retrieval_outcome"] == "retrieved" and r["strategy_similarity"] >= 0.2
    # without --only-missing the own strategy is replaced, and kept in own_strategy
    assert by_id["t-own"]["strategy_source"] == "retrieved" and by_id["t-own"]["own_strategy"] == "Approach: my own"
    assert by_id["t-own"]["strategy_entry"] == cycle and by_id["t-own"]["strategy_match"] == "r2"
    # nothing similar: no strategy, counted
    far = by_id["t-far"]
    assert far["strategy"] is None and far["strategy_source"] is None and far["retrieval_outcome"] == "no_match"
    assert result.summary.outcomes == {"own": 0, "retrieved": 4, "no_match": 1, "all_leaked": 0}
    assert [r["id"] for r in result.rows] == [t["id"] for t in TARGETS]  # input order

    # similarities are TF-IDF cosines over the library's problems, computed independently here
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")  # one-character words too
    vec.fit([p.problem for p in library.problems])
    expected = cosine_similarity(vec.transform([TARGETS[1]["problem"]]), vec.transform([P1]))[0, 0]
    assert by_id["t-prob"]["strategy_similarity"] == pytest.approx(expected, abs=1e-6)
    assert (
        cosine_similarity(vec.transform([TARGETS[4]["problem"]]), vec.transform([p.problem for p in library.problems])).max()
        < 0.2
    )


def test_the_exact_problem_wins_and_numbers_tell_problems_apart(tmp_path, capsys):
    # issue 20: with numbers dropped from the vectors, "what is 0 plus 1" scored 1.000 against "What is 7
    # plus 4?" (first in the library, so chosen) although its exact text was in the library
    source = tmp_path / "strategies.jsonl"
    rows = [row("a", "What is 7 plus 4?", SQUARE, answer="11"), row("b", "what is 0 plus 1", CYCLE, answer="1")]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    targets = tmp_path / "targets.jsonl"
    targets.write_text(
        "".join(json.dumps(t) + "\n" for t in [{"id": "t1", "problem": "what is 0 plus 1", "answer": "1"},
                                               {"id": "t2", "problem": "what is 2 plus 5", "answer": "7"}])
    )  # fmt: skip
    lib, out = tmp_path / "lib", tmp_path / "filled.jsonl"
    assert cli_main(["library", "build", "--input", str(source), "--output", str(lib)]) == 0
    assert (
        cli_main(["library", "retrieve", "--library", str(lib), "--input", str(targets), "--output", str(out), "--k", "2"]) == 0
    )
    t1, t2 = read_rows(out)
    assert t1["strategy_match"] == "b" and t1["strategy"] == render_strategy(CYCLE) and t1["strategy_similarity"] == 1.0
    assert [c["similarity"] for c in t1["retrieval_candidates"]][1] < 0.9  # "What is 7 plus 4?": close, not a tie
    assert 0.2 < max(c["similarity"] for c in t2["retrieval_candidates"]) < 0.9  # no other text reads 1.000


def test_only_missing_keeps_own_strategies(library):
    result = library.retrieve(TARGETS, RetrievalConfig(only_missing=True))
    own = result.rows[3]
    assert own["strategy"] == "Approach: my own" and own["strategy_source"] == "own" and own["retrieval_outcome"] == "own"
    assert own["strategy_entry"] is None and own["retrieval_candidates"] == []
    assert result.summary.outcomes == {"own": 1, "retrieved": 3, "no_match": 1, "all_leaked": 0}
    # a retrieved row carries its entry's strategy JSON, so the row stays consistent
    first = result.rows[0]
    assert first["strategy_json"] == library.entry(first["strategy_entry"]).strategy_json


def test_only_missing_when_every_row_has_its_own_strategy(library):
    # `sgpo library retrieve --only-missing` on a file whose rows all have a strategy (the README's
    # block on the demo's held-out split) raised scikit-learn's "Found array with 0 sample(s)"
    rows = [t for t in TARGETS if t.get("strategy")]
    assert rows
    result = library.retrieve(rows, RetrievalConfig(only_missing=True))
    assert [r["strategy_source"] for r in result.rows] == ["own"] * len(rows)
    assert result.summary.outcomes["own"] == len(rows) and result.summary.outcomes["retrieved"] == 0


def test_retrieved_rows_do_not_feed_a_library(library):
    rows = library.retrieve(TARGETS[:2], RetrievalConfig(only_missing=True)).rows
    own = row("own", "A new problem about completing the square.", SQUARE)
    with pytest.raises(LibraryError, match=r"retrieved \(not extracted\) 2"):
        StrategyLibrary.build([rows])
    lib, summary = StrategyLibrary.build([[*rows, own]])
    assert summary.used == 1 and summary.skipped == {"retrieved (not extracted)": 2} and lib.entries[0].problems == ["own"]


def test_min_similarity_threshold(library):
    sims = {r["id"]: r["strategy_similarity"] for r in library.retrieve(TARGETS[:3]).rows}
    cut = sorted(sims.values())[1]  # keeps the two most similar problems, drops the least similar
    result = library.retrieve(TARGETS[:3], RetrievalConfig(min_similarity=cut))
    assert sorted(r["retrieval_outcome"] for r in result.rows) == ["no_match", "retrieved", "retrieved"]
    assert all(r["strategy_similarity"] >= cut for r in result.rows if r["strategy"])


def test_leaking_candidates_are_skipped_for_the_next_and_counted(library):
    square, _, leaky, cycle = (e.id for e in library.entries)
    targets = [
        # gold 4 is in the leaky strategy's text: skipped, the clean cycle strategy is used
        {"id": "leak", "problem": "What is the remainder when 6^30 is divided by 7?", "answer": "4"},
        # the same problem with gold 3: nothing leaks, the leaky entry (first in the index) is used
        {"id": "clean", "problem": "What is the remainder when 6^30 is divided by 7?", "answer": "3"},
        # the same number as a fraction: math-aware (8/2 = 4) — skipped too
        {"id": "frac", "problem": "What is the remainder when 6^31 is divided by 7?", "answer": "8/2"},
    ]
    rows = {r["id"]: r for r in library.retrieve(targets, RetrievalConfig(k=1, min_similarity=0.2)).rows}
    assert rows["leak"]["strategy_entry"] == cycle and rows["leak"]["retrieval_leaks"] == 1
    assert rows["clean"]["strategy_entry"] == leaky and rows["clean"]["retrieval_leaks"] == 0
    assert rows["frac"]["strategy_entry"] == cycle and rows["frac"]["retrieval_leaks"] == 1


def test_every_candidate_leaking_leaves_the_problem_without_a_strategy(tmp_path):
    rows = [row("r1", R1, CYCLE_LEAKY, "2"), row("p1", P1, COMPLEMENT)]
    lib, _ = StrategyLibrary.build([rows])
    target = [{"id": "t", "problem": "What is the remainder when 9^9 is divided by 7?", "answer": "4"}]
    result = lib.retrieve(target, RetrievalConfig(k=2, min_similarity=0.3))
    (out,) = result.rows
    assert out["strategy"] is None and out["retrieval_outcome"] == "all_leaked" and out["retrieval_leaks"] == 1
    assert result.summary.outcomes["all_leaked"] == 1 and result.summary.leaks_skipped == 1
    assert "all_leaked   1" in result.summary.format()


def test_bad_problem_rows_are_reported_per_row(library, tmp_path):
    path = write_jsonl(
        tmp_path / "problems.jsonl",
        [
            {"id": "a", "problem": "x", "answer": "1"},
            {"id": "a", "problem": "y", "answer": "2"},
            {"id": "b", "problem": "", "answer": "2"},
            {"id": "c", "problem": "z"},
            {"id": "d", "problem": "w", "answer": "1", "strategy": 3},
        ],
    )
    with pytest.raises(DataError) as err:
        library.retrieve(str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: 4 bad row(s):")
    assert "row 1 (id 'a'): field 'id': duplicate problem id 'a' (first in row 0)" in msg
    assert "row 2 (id 'b'): field 'problem' must be a non-empty string" in msg
    assert "row 3 (id 'c'): field 'answer' is missing (the leak filter checks retrieved strategies against it)" in msg
    assert "row 4 (id 'd'): field 'strategy' must be text or null, got a int" in msg
    with pytest.raises(DataError, match="no problems"):
        library.retrieve([])
    # a long list: the first 20 rows, and a count of the others
    with pytest.raises(DataError) as err:
        library.retrieve([{"id": i, "problem": "p"} for i in range(25)])
    assert str(err.value).count("field 'answer' is missing") == 20 and str(err.value).endswith("... and 5 more")


def test_world_library_retrieves_the_right_family(tmp_path):
    """Extraction outputs of the strategy world through the real extraction pipeline: one entry per family,
    and every held-out problem (same question paraphrases, new lists) retrieves its family's strategy."""
    from sgpo.strategies.extraction import ExtractionConfig, extract_strategies
    from sgpo.world import WorldExtractor, build_world, write_world
    from sgpo.world.generate import WorldSpec

    world = build_world(0, WorldSpec(per_family={"heldout": 5, "train": 8, "warmup": 0}))
    paths = write_world(tmp_path / "oracle", world)
    extract_strategies(
        paths["train"], tmp_path / "train.jsonl", WorldExtractor(), ExtractionConfig(concurrency=1), progress=False
    )
    lib, summary = StrategyLibrary.build([tmp_path / "train.jsonl"])
    assert summary.entries == 6 and summary.used == 48 and len(lib.problems) == 48
    heldout = [{k: r[k] for k in ("id", "family", "problem", "answer")} for r in world["heldout"]]
    result = lib.retrieve(heldout, RetrievalConfig(only_missing=True))
    family_of = {e.id: {p.split("-")[1] for p in e.problems} for e in lib.entries}
    assert all(len(f) == 1 for f in family_of.values())
    assert [family_of[r["strategy_entry"]] for r in result.rows] == [{r["family"]} for r in heldout]


# ------------------------------------------------------------------------------------------ re-ranking
WALRUS = Strategy(approach="follow the walrus walrus walrus method", key_insight="walrus tusks count", steps=["walrus walrus"])
ZEBRA = Strategy(approach="follow the zebra zebra zebra method", key_insight="zebra stripes count", steps=["zebra zebra"])
ZOO = "What is the magic number of the zoo keeper?"
# the strategy last, right before the answer: a one-layer model learns to read it in ~120 steps (lr 3e-3,
# seeds 0-3 all within 130 steps); with the default template's instruction after it, some seeds never do
ZOO_LIBRARY = [
    row("w", "What is the magic number of the zoo keeper today?", WALRUS),
    row("z", "What is the magic number of the zebra house?", ZEBRA),
]
ZOO_FORMAT_KW = {"template": "{problem}", "guided_template": "{problem}\n{strategy}"}


@pytest.fixture(scope="module")
def zoo_policy(tmp_path_factory):
    """A tiny policy taught to answer 7 with the zebra strategy in its prompt and 3 otherwise."""
    from sgpo.prompts import PromptFormat

    from test_extract_tiny import build_model, build_tokenizer, teach

    fmt = PromptFormat(**ZOO_FORMAT_KW)
    zebra, walrus = render_strategy(ZEBRA), render_strategy(WALRUS)
    tok = build_tokenizer([ZOO, zebra, walrus, "today zebra house"], added=["\\boxed{7}", "\\boxed{3}"])
    model = build_model(tok, seed=0)
    teach(
        model,
        tok,
        [
            (fmt.render(tok, ZOO, zebra), "\\boxed{7}"),
            (fmt.render(tok, ZOO, walrus), "\\boxed{3}"),
            (fmt.render(tok, ZOO), "\\boxed{3}"),
        ],
        lr=3e-3,
        max_steps=400,
    )
    path = tmp_path_factory.mktemp("zoo") / "policy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    fmt.save(path)  # MODEL/prompt_format.json: what the CLI prompts the policy with
    return model, tok, fmt, path


def test_rerank_keeps_the_candidate_that_helps_the_policy(zoo_policy):
    model, tok, fmt, _ = zoo_policy
    # the walrus problem is the nearer one (it shares more words with the target), the zebra one farther
    lib, _ = StrategyLibrary.build([ZOO_LIBRARY])
    target = [{"id": "t", "problem": ZOO, "answer": "7"}]
    plain = lib.retrieve(target, RetrievalConfig(k=2, min_similarity=0.1)).rows[0]
    assert plain["strategy"] == render_strategy(WALRUS)
    assert [c["entry"] for c in plain["retrieval_candidates"]] == [e.id for e in lib.entries]
    rerank = RerankConfig(model=model, tokenizer=tok, rollouts=2, max_new_tokens=3, temperature=0.0, prompt_format=fmt)
    result = lib.retrieve(target, RetrievalConfig(k=2, min_similarity=0.1), rerank)
    (out,) = result.rows
    # autonomous: 3 (0/2 correct); walrus: 3 -> score 0; zebra: 7 -> score 1
    assert out["strategy"] == render_strategy(ZEBRA) and out["rerank_score"] == 1.0
    assert out["rerank_guided_accuracy"] == 1.0 and out["rerank_auto_accuracy"] == 0.0
    assert [c["score"] for c in out["retrieval_candidates"]] == [0.0, 1.0]
    assert out["strategy_similarity"] < plain["strategy_similarity"]
    assert result.summary.reranked == 1 and result.summary.rollouts == 6  # (1 autonomous + 2 guided) x 2


# ------------------------------------------------------------------------------------------ CLI
def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _sgpo(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "sgpo", *args], capture_output=True, text=True, env=_env(), timeout=timeout)


def test_cli_build_and_retrieve(library_file, tmp_path):
    lib = tmp_path / "lib"
    proc = _sgpo(
        "library", "build", "--input", str(library_file), "--output", str(lib), "--summary-json", str(tmp_path / "b.json")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"library {lib}: 4 entries for 5 problems, from 8 rows of 1 input(s)" in proc.stderr
    assert json.loads((tmp_path / "b.json").read_text())["entries"] == 4
    problems = write_jsonl(tmp_path / "problems.jsonl", TARGETS)
    out = tmp_path / "out.parquet"
    proc = _sgpo(
        "library", "retrieve", "--library", str(lib), "--input", str(problems), "--output", str(out), "--only-missing", "--k", "2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out)
    assert [r["strategy_source"] for r in rows] == ["retrieved", "retrieved", "retrieved", "own", None]
    assert rows[0]["strategy"] == render_strategy(SQUARE)
    assert all(re.search(p, proc.stderr, re.M) for p in (r"^  retrieved +3 ", r"^  no_match +1 ", r"^  own +1 "))
    # a library of another schema: one line, no traceback, exit 2
    manifest = json.loads((lib / "manifest.json").read_text())
    (lib / "manifest.json").write_text(json.dumps({**manifest, "schema": 99}))
    proc = _sgpo("library", "retrieve", "--library", str(lib), "--input", str(problems), "--output", str(out))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "library schema 99 is not supported (this sgpo reads schema 1)" in proc.stderr


def test_cli_errors_in_process(library_file, tmp_path, capsys):
    lib = tmp_path / "lib"
    assert cli_main(["library", "build", "--input", str(library_file), "--output", str(lib)]) == 0
    capsys.readouterr()
    assert cli_main(["library", "build", "--input", str(library_file), "--output", str(lib)]) == 2
    assert "already exists; choose another folder or pass --overwrite" in capsys.readouterr().err
    assert cli_main(["library", "build", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "l2")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    problems = write_jsonl(tmp_path / "p.jsonl", TARGETS)
    assert (
        cli_main(["library", "retrieve", "--library", str(lib), "--input", str(problems), "--output", str(tmp_path / "o.txt")])
        == 2
    )
    assert "o.txt: output must end in .jsonl, .json, .parquet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli_main(["library", "retrieve", "--library", str(lib), "--input", str(problems), "--output", "o.jsonl", "--k", "0"])
    assert exit_.value.code == 2 and "--k must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(
            [
                "library",
                "retrieve",
                "--library",
                str(lib),
                "--input",
                str(problems),
                "--output",
                "o.jsonl",
                "--min-similarity",
                "1.5",
            ]
        )
    assert "--min-similarity must be in [0, 1]" in capsys.readouterr().err


def test_cli_rerank_reads_the_policy_folder(zoo_policy, tmp_path, capsys):
    # in-process (a subprocess would spend most of its time importing torch)
    _, _, _, path = zoo_policy
    lib = StrategyLibrary.build([ZOO_LIBRARY])[0].save(tmp_path / "lib")
    problems = write_jsonl(tmp_path / "p.jsonl", [{"id": "t", "problem": ZOO, "answer": "7"}])
    out = tmp_path / "out.jsonl"
    args = [
        "library",
        "retrieve",
        "--library",
        str(lib),
        "--input",
        str(problems),
        "--output",
        str(out),
        "--k",
        "2",
        "--min-similarity",
        "0.1",
        "--rerank-model",
        str(path),
        "--rerank-k",
        "2",
        "--rerank-temperature",
        "0",
        "--rerank-max-new-tokens",
        "3",
        "--device",
        "cpu",
        "--no-progress",
        "--summary-json",
        str(tmp_path / "s.json"),
    ]
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert f"prompt format: {path / 'prompt_format.json'}" in err and "1 re-ranked by the policy (6 rollouts)" in err
    (got,) = read_rows(out)
    assert got["strategy"] == render_strategy(ZEBRA) and got["rerank_score"] == 1.0
    # the rollout cache next to the output makes a rerun free
    assert (tmp_path / "out.jsonl.rerank.cache.sqlite").exists()
    assert cli_main(args) == 0 and json.loads((tmp_path / "s.json").read_text())["rollouts"] == 0
    assert read_rows(out)[0]["strategy"] == render_strategy(ZEBRA)
