"""Strategy scoring: score = guided accuracy - autonomous accuracy over k rollouts of a policy; the best
of n candidates per problem is kept. The policy is a tiny model taught here to answer 7 when a
"zebra" strategy is in the prompt and 3 otherwise, so every accuracy is known by construction."""

import json
from dataclasses import replace

import pytest

from sgpo.data import ColumnMap, DataError, read_rows
from sgpo.prompts import DEFAULT_GUIDED_PROMPT_TEMPLATE, DEFAULT_PROMPT_TEMPLATE, PromptFormat
from sgpo.sampling import SamplingConfig
from sgpo.strategies.scoring import ScoringConfig, best_index, group_candidates, score_strategies, strategy_score
from sgpo.verify import Verifier

from test_extract_tiny import build_model, build_tokenizer, teach

P1, P2, P3 = "What is the magic number of the zoo?", "What is the other number of the zoo?", "Name the zoo keeper."
ZEBRA = "Approach: follow the zebra zebra zebra method.\nKey insight: zebra stripes count."
ZEBRA2 = "Approach: a zebra zebra variant.\nKey insight: zebra stripes again."
WALRUS = "Approach: follow the walrus walrus walrus method.\nKey insight: walrus tusks count."


def test_strategy_score_by_hand():
    # guided 3 of 4 correct (0.75), autonomous 1 of 4 (0.25): 0.75 - 0.25 = 0.5
    assert strategy_score([True, True, True, False], [False, True, False, False]) == pytest.approx(0.5)
    # rewards in [0, 1]: (0.5 + 1) / 2 - (1 + 1) / 2 = -0.25
    assert strategy_score([0.5, 1.0], [1.0, 1.0]) == pytest.approx(-0.25)
    with pytest.raises(ValueError):
        strategy_score([], [True])
    assert best_index([0.0, 0.5, 0.5, -1.0]) == 1  # first of the tied best


def test_grouping_validates_rows():
    rows = [{"problem": "a", "answer": "1", "strategy": "s1"}, {"problem": "a", "answer": "2", "strategy": "s2"}]
    with pytest.raises(DataError, match="row 1: answer '2' differs from '1' given for the same problem in row 0"):
        group_candidates(rows, ColumnMap(), "problem", 4, "f.jsonl")
    with pytest.raises(DataError, match="f.jsonl: row 0: missing or empty column 'answer'"):
        group_candidates([{"problem": "a", "strategy": "s"}], ColumnMap(), "problem", 4, "f.jsonl")
    rows = [
        {"problem": "a", "answer": "1", "strategy": "s1", "status": "ok"},
        {"problem": "a", "answer": "1", "strategy": "s1", "status": "ok"},  # duplicate text: one candidate
        {"problem": "a", "answer": "1", "strategy": None, "status": "failed"},
        {"problem": "a", "answer": "1", "strategy": "s3", "status": "rejected"},
        {"problem": "a", "answer": "1", "strategy": "s4", "status": "ok"},
        {"problem": "a", "answer": "1", "strategy": "s5", "status": "ok"},
    ]
    (g,) = group_candidates(rows, ColumnMap(), "problem", 2, "f")
    assert g.candidates == [0, 4] and g.rows == [0, 1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    fmt = PromptFormat()
    corpus = [DEFAULT_PROMPT_TEMPLATE, DEFAULT_GUIDED_PROMPT_TEMPLATE, P1, P2, P3, ZEBRA, ZEBRA2, WALRUS]
    tok = build_tokenizer(corpus, added=["\\boxed{7}", "\\boxed{3}"])
    model = build_model(tok, seed=3)
    examples = []
    for p in (P1, P2):
        examples += [
            (fmt.render(tok, p, ZEBRA), "\\boxed{7}"),
            (fmt.render(tok, p, ZEBRA2), "\\boxed{7}"),
            (fmt.render(tok, p, WALRUS), "\\boxed{3}"),
            (fmt.render(tok, p), "\\boxed{3}"),
        ]
    teach(model, tok, examples)
    path = tmp_path_factory.mktemp("policy") / "policy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok, path


ROWS = [
    {"id": "p1-walrus", "problem": P1, "answer": "7", "strategy": WALRUS, "status": "ok"},
    {"id": "p1-zebra", "problem": P1, "answer": "7", "strategy": ZEBRA, "status": "ok"},
    {"id": "p1-zebra2", "problem": P1, "answer": "7", "strategy": ZEBRA2, "status": "ok"},  # beyond max_candidates=2
    {"id": "p2-zebra", "problem": P2, "answer": "3", "strategy": ZEBRA, "status": "ok"},
    {"id": "p2-walrus", "problem": P2, "answer": "3", "strategy": WALRUS, "status": "ok"},
    {"id": "p3-failed", "problem": P3, "answer": "Bob", "strategy": None, "status": "failed"},
]


def test_scores_and_best_candidate(policy, tmp_path):
    model, tok, _ = policy
    inp = tmp_path / "cands.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = ScoringConfig(SamplingConfig(k=2, max_new_tokens=3, temperature=0.0, seed=0), max_candidates=2)
    with Verifier(num_workers=0) as verifier:
        summary = score_strategies(
            inp,
            tmp_path / "best.jsonl",
            model,
            tok,
            config=cfg,
            verifier=verifier,
            candidates_output=tmp_path / "all.jsonl",
            progress=False,
        )
        got = read_rows(tmp_path / "best.jsonl")
        # P1 (gold 7): autonomous says 3 -> 0/2 = 0; walrus -> 3 -> 0, score 0; zebra -> 7 -> 2/2 = 1, score 1 - 0 = 1
        # P2 (gold 3): autonomous 3 -> 1; zebra -> 7 -> 0, score -1; walrus -> 3 -> 1, score 0
        assert [(r["id"], r["strategy_score"], r["guided_accuracy"], r["auto_accuracy"], r["num_candidates"]) for r in got] == [
            ("p1-zebra", 1.0, 1.0, 0.0, 2),
            ("p2-walrus", 0.0, 1.0, 1.0, 2),
            ("p3-failed", None, None, None, 0),
        ]
        assert got[0]["strategy"] == ZEBRA and got[1]["strategy"] == WALRUS and got[2]["strategy"] is None
        assert got[0]["scoring_k"] == 2
        every = read_rows(tmp_path / "all.jsonl")
        assert [(r["id"], r["strategy_score"], r["chosen"]) for r in every] == [
            ("p1-walrus", 0.0, False),
            ("p1-zebra", 1.0, True),
            ("p2-zebra", -1.0, False),
            ("p2-walrus", 0.0, True),
        ]
        # 2 problems x (1 autonomous + 2 guided) prompts x k=2
        assert summary.rollouts == 12 and summary.candidates_scored == 4 and summary.problems == 3
        assert summary.mean_auto_accuracy == pytest.approx(0.5) and summary.mean_best_score == pytest.approx(0.5)

        # rerun: everything comes from the cache, same result; min_score drops the useless strategy of P2
        again = score_strategies(
            inp, tmp_path / "best.jsonl", model, tok, config=replace(cfg, min_score=0.5), verifier=verifier, progress=False
        )
        assert again.rollouts == 0 and again.from_cache == 6 and again.kept == 1
        got2 = read_rows(tmp_path / "best.jsonl")
        assert got2[0]["strategy"] == ZEBRA and got2[1]["strategy"] is None and got2[1]["strategy_score"] == 0.0


def test_cli_scores_from_a_saved_policy(policy, tmp_path, capsys):
    # the command's main() in-process (a subprocess would spend most of its time importing torch)
    from sgpo.commands.score_strategies import main

    _, _, path = policy
    inp = tmp_path / "cands.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    out = tmp_path / "best.parquet"
    rc = main(
        [
            "--input",
            str(inp),
            "--output",
            str(out),
            "--model",
            str(path),
            "--k",
            "2",
            "--temperature",
            "0",
            "--max-new-tokens",
            "3",
            "--device",
            "cpu",
            "--no-progress",
            "--summary-json",
            str(tmp_path / "s.json"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    (row,) = read_rows(out)
    assert (row["id"], row["strategy_score"]) == ("p1-zebra", 1.0)
    assert "scored 2 candidate strategies of 1/1 problems" in err
    # two input rows of one problem became one output row: said so (issue 20)
    assert "2 input rows are 1 problem(s): the rows of one problem (same problem) are its candidate strategies" in err
    assert json.loads((tmp_path / "s.json").read_text())["candidates_scored"] == 2
    assert main(["--input", str(inp), "--output", str(out), "--model", str(path), "--k", "0"]) == 2
    assert "sgpo score-strategies: error: --k must be >= 1" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "missing.jsonl"), "--output", str(out), "--model", str(path)]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
