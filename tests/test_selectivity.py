"""The selectivity view: KL mass shares (hand values), critical-span mapping, token alignment of the
per-token KL, and `sgpo selectivity` end to end with its HTML parsed."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import torch

import sgpo.evaluation.selectivity as sel
from sgpo.commands.selectivity import main as selectivity_main
from sgpo.data import DataError
from sgpo.objectives import forward_kl_reference

from test_eval_fixtures import tiny_models, write_jsonl  # noqa: F401 - fixture

RESPONSE = "method : running maximum . 3 > 3 , 7 > 7 , 1 > 7 . answer : \\boxed{7}"
METHOD = (RESPONSE.index("running maximum"), RESPONSE.index("running maximum") + len("running maximum"))


def test_overlapping_tokens():
    offsets = [(0, 3), (3, 4), (4, 9), (9, 9), (9, 12)]
    # span [3, 5) overlaps (3,4) and (4,9); span [11, 20) overlaps (9,12); the empty token never counts
    assert sel.overlapping_tokens(offsets, [(3, 5), (11, 20)]) == [False, True, True, False, True]
    # end is exclusive: [0, 3) does not touch (3, 4)
    assert sel.overlapping_tokens(offsets, [(0, 3)]) == [True, False, False, False, False]


def test_top_mass_shares_hand_values():
    # 100 tokens with KL 50, 20, 10, 5, 5, 5, 5 and 93 zeros (one of them -1e-9 round-off): total 100
    kl = [5, 50, 5, 20, 5, 10, 5] + [0.0] * 92 + [-1e-9]
    shares = sel.top_mass_shares(kl)
    # top 1% = 1 token: 50/100; top 5% = 5 tokens: (50+20+10+5+5)/100; top 10% = 10 tokens: all of it
    assert shares == {"1%": pytest.approx(0.5), "5%": pytest.approx(0.9), "10%": pytest.approx(1.0)}
    # 10 tokens: top 1% and 5% still take one token (⌈0.1⌉ = ⌈0.5⌉ = 1), top 10% one as well
    assert sel.top_mass_shares([1.0] * 10) == {"1%": pytest.approx(0.1), "5%": pytest.approx(0.1), "10%": pytest.approx(0.1)}
    assert sel.top_mass_shares([0.0, 0.0]) == {"1%": None, "5%": None, "10%": None}


def test_critical_share_hand_values():
    # critical tokens 0 and 3 (half the tokens) carry 3 of the 4 nats: share .75, enrichment 1.5
    assert sel.critical_share([3.0, 1.0, 0.0, 0.0], [True, False, False, True]) == {
        "token_share": 0.5,
        "kl_mass_share": 0.75,
        "enrichment": 1.5,
    }
    with pytest.raises(ValueError):
        sel.critical_share([1.0], [True, False])


@pytest.fixture(scope="module")
def random_lm(tiny_models):
    from transformers import AutoModelForCausalLM

    from sgpo.modeling import load_tokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_models["random"]), load_tokenizer(tiny_models["random"])


@pytest.mark.parametrize("plain_head", [True, False])
def test_token_kl_scores_the_completion_tokens(random_lm, monkeypatch, plain_head):
    """Against full logits computed directly: the distribution over completion token t comes from
    the position right before it, in each prompt's own context."""
    model, tok = random_lm
    if not plain_head:  # the path for models whose logits are soft-capped or scaled
        monkeypatch.setattr(sel, "_plain_head", lambda m: False)
    teacher = tok("strategy : add the numbers . What is 2+2?", add_special_tokens=False)["input_ids"]
    student = tok("What is 2+2?", add_special_tokens=False)["input_ids"]
    completion = tok(RESPONSE, add_special_tokens=False)["input_ids"]
    out = sel.token_kl(model, teacher, student, completion, chunk=7)  # several chunks
    C = len(completion)
    with torch.no_grad():
        lt = model(torch.tensor([teacher + completion])).logits[0, len(teacher) - 1 : len(teacher) - 1 + C]
        ls = model(torch.tensor([student + completion])).logits[0, len(student) - 1 : len(student) - 1 + C]
    expected = forward_kl_reference(ls, lt)
    assert out["kl"].shape == (C,)
    torch.testing.assert_close(out["kl"], expected, atol=1e-5, rtol=1e-4)
    assert out["kl"].min() >= -1e-6 and out["kl"].max() > 1e-3
    idx = torch.tensor(completion).unsqueeze(-1)
    torch.testing.assert_close(out["teacher_logp"], lt.log_softmax(-1).gather(-1, idx).squeeze(-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["student_logp"], ls.log_softmax(-1).gather(-1, idx).squeeze(-1), atol=1e-5, rtol=1e-4)
    # the same context on both sides: exactly no divergence
    assert torch.equal(sel.token_kl(model, student, student, completion)["kl"], torch.zeros(C))


def test_critical_spans_map_to_tokens(random_lm):
    _, tok = random_lm
    ids, texts, offsets, critical = sel.tokenize_response(tok, RESPONSE, [list(METHOD)], "f: row 0")
    assert len(ids) == len(texts) == len(offsets) == len(critical)
    assert "".join(texts) == RESPONSE  # byte-level tokens tile the text
    assert "".join(t for t, c in zip(texts, critical) if c).strip() == "running maximum"
    for bad, msg in [([[5, 2]], r"entry 0 is \[5, 2\]"), ([[0, 10_000]], r"0 <= start < end <= 69"), ("0-3", "must be a list")]:
        with pytest.raises(DataError, match=r"f: row 0: column 'critical_spans'.*" + msg):
            sel.tokenize_response(tok, RESPONSE, bad, "f: row 0")


class Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tokens, self.critical, self.images = 0, 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and "t" in a.get("class", "").split():
            self.tokens += 1
            self.critical += "crit" in a["class"].split()
            assert a["style"].startswith("background:rgba(214,39,40,") and a["title"].startswith("KL=")
        if tag == "img":
            self.images.append(a["src"])


def test_selectivity_cli_end_to_end(tiny_models, tmp_path):
    boxed = (RESPONSE.index("\\boxed"), len(RESPONSE))
    data = write_jsonl(
        tmp_path / "heldout.jsonl",
        [
            {
                "id": "m1",
                "problem": "3 7 1 : keep the largest",
                "answer": "7",
                "family": "max",
                "response": RESPONSE,
                "strategy": "keep a running maximum",
                "critical_spans": [list(METHOD), list(boxed)],
            },
            {"id": "s1", "problem": "What is 2+3?", "answer": "5", "family": "sum", "strategy": "add the numbers"},
            {"id": "unused", "problem": "p", "answer": "1", "strategy": "s"},
        ],
    )
    out = tmp_path / "sel"
    rc = selectivity_main(
        ["--model", str(tiny_models["random"]), "--data", str(data), "--n", "2", "--out", str(out), "--max-new-tokens", "6"]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "tokens.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["m1", "s1"] and [r["source"] for r in rows] == ["response", "sampled"]
    assert len(rows[1]["kl"]) == 6 and rows[1]["critical"] is None  # sampled: 6 new tokens, no spans
    assert summary["tokens"] == sum(len(r["kl"]) for r in rows) and summary["sources"] == {"response": 1, "sampled": 1}
    shares = summary["top_mass_share"]
    assert 0 < shares["1%"] <= shares["5%"] <= shares["10%"] <= 1
    # the critical figures, recomputed from the per-token dump
    kl, crit = rows[0]["kl"], rows[0]["critical"]
    total = sum(max(0.0, v) for v in kl)
    c = summary["critical"]
    assert c["rows"] == 1 and c["critical_tokens"] == sum(crit) > 0
    assert c["token_share"] == pytest.approx(sum(crit) / len(crit))
    assert c["kl_mass_share"] == pytest.approx(sum(max(0.0, v) for v, f in zip(kl, crit) if f) / total)
    # the HTML view: one coloured span per token, critical ones marked, the figure present
    page = Spans()
    page.feed((out / "selectivity.html").read_text())
    assert page.tokens == summary["tokens"] and page.critical == c["critical_tokens"]
    assert page.images == ["kl_concentration.png"] and (out / "kl_concentration.png").read_bytes()[:4] == b"\x89PNG"


def test_selectivity_cli_errors(tiny_models, tmp_path, capsys):
    nostrat = write_jsonl(tmp_path / "a.jsonl", [{"problem": "p", "response": "r"}])
    assert selectivity_main(["--model", str(tiny_models["random"]), "--data", str(nostrat), "--out", str(tmp_path / "o")]) == 1
    assert "row 0: column 'strategy' is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        selectivity_main(["--model", "m", "--data", "d"])  # --out is required
