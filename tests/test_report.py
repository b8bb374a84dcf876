"""`sgpo report RUN_DIR`: the HTML page renders, its figures exist, missing keys are tolerated."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sgpo.commands.report import main as report_main
from sgpo.evaluation.report import moving_average, read_metrics, render_report, series_of


class Page(HTMLParser):
    """Collects image sources, headings and table cells of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.headings, self.cells, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in ("h1", "h2", "td", "th"):
            self._in = tag
            (self.headings if tag in ("h1", "h2") else self.cells).append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in in ("h1", "h2"):
            self.headings[-1] += data
        elif self._in in ("td", "th"):
            self.cells[-1] += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def sgpo_rows(n=60):
    rows = []
    for step in range(1, n + 1):
        t = step / n
        auto, guided = 0.2 + 0.5 * t, 0.7 + 0.2 * t
        rows.append(
            {
                "step": step,
                "epoch": t,
                "loss": 1 - t,
                "learning_rate": 1e-6,
                "reward/auto": auto,
                "reward/guided": guided,
                "reward/gap": guided - auto,
                "accuracy/auto": auto,
                "accuracy/guided": guided,
                "distill/weight_mean": guided - auto,
                "distill/kl": 0.3 * math.exp(-3 * t),
                "distill/masked_frac": 0.05,
                "distill/loss": 0.1,
                "rl/loss": 0.0,
                "clip/low": 0.01,
                "clip/high": 0.02,
                "completion_length/auto": 100 + 50 * t,
                "completion_length/guided": 90 + 40 * t,
                "tokens_per_second": 900.0,
            }
        )
        if step % 20 == 0:
            rows[-1]["eval/heldout_accuracy"] = auto
    return rows


def write_run(run: Path, rows, tail: str = "") -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return run


EVAL_DOC = {
    "model": "runs/x",
    "settings": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64},
    "benchmarks": {
        "heldout": {
            "n": 40,
            "k": 1,
            "accuracy": 0.55,
            "ci95": [0.4, 0.69],
            "pass_at_k": {"1": 0.55},
            "num_timeouts": 0,
            "mean_completion_tokens": 31.0,
            "greedy_accuracy": 0.55,
        }
    },
}


def test_report_of_an_sgpo_run(tmp_path):
    run = write_run(tmp_path / "run", sgpo_rows(), tail='{"step": 61, "loss": 0.')  # a line still being written
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text(json.dumps(EVAL_DOC))
    assert report_main([str(run)]) == 0
    index = run / "report" / "index.html"
    page = parse(index)
    srcs = [img["src"] for img in page.images]
    expected = {
        "reward.png",
        "gap.png",
        "instance_weight.png",
        "distill_kl.png",
        "masked_fraction.png",
        "completion_length.png",
        "loss.png",
        "eval.png",
        "other_eval.png",
    }
    assert expected <= set(srcs)
    for src in srcs:  # every figure referenced exists and is a PNG
        data = (index.parent / src).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, src
    assert "Evaluation" in page.headings and "Training curves" in page.headings
    # the eval table and the summary table carry the numbers
    assert "heldout" in page.cells and "55.0" in page.cells and "40.0–69.0" in page.cells
    i = page.cells.index("reward/auto")
    assert page.cells[i + 1 : i + 3] == [f"{0.2 + 0.5 / 60:.4g}", "0.7"]  # first, last
    # the partial last line is reported, not fatal
    html = index.read_text()
    assert "line 61: skipped, invalid JSON" in html


def test_report_of_a_grpo_run_has_no_guided_panels(tmp_path):
    rows = [{"step": s, "loss": 1.0 / s, "reward/auto": 0.1 * s, "completion_length/auto": 50 + s} for s in range(1, 6)]
    run = write_run(tmp_path / "grpo", rows)
    index = render_report(run)
    srcs = {img["src"] for img in parse(index).images}
    assert srcs == {"reward.png", "completion_length.png", "loss.png"}
    assert all((index.parent / s).is_file() for s in srcs)
    assert not (index.parent / "distill_kl.png").exists()


def test_gap_is_derived_when_not_logged(tmp_path):
    rows = [{"step": s, "reward/auto": 0.1, "reward/guided": 0.5} for s in range(1, 4)]
    index = render_report(write_run(tmp_path / "r", rows))
    assert "gap.png" in {img["src"] for img in parse(index).images}


def test_report_errors_and_reader(tmp_path, capsys):
    assert report_main([str(tmp_path / "missing")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 1
    assert "nothing to report" in capsys.readouterr().err
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1, "loss": 2}\n\n[1, 2]\n{"step": 2, "loss": NaN}\n')
    rows, warnings = read_metrics(p)
    assert len(rows) == 2 and warnings == [f"{p}: line 3: skipped, not a JSON object"]
    xs, ys = series_of(rows, "loss")
    assert xs == [1.0, 2.0] and ys[0] == 2.0 and math.isnan(ys[1])
    # centred window of 3, shrinking at the ends: [(1+2)/2, (1+2+3)/3, (2+3+4)/3, (3+4)/2]
    assert moving_average([1.0, 2.0, 3.0, 4.0], 3) == pytest.approx([1.5, 2.0, 3.0, 3.5])


def test_report_warns_when_steps_go_backwards(tmp_path, capsys):
    # a GRPO run written after an SGPO run into the same folder: steps restart at 1
    run = write_run(tmp_path / "run", sgpo_rows(30) + sgpo_rows(10))
    assert report_main([str(run)]) == 0
    err = capsys.readouterr().err
    assert "sgpo report: warning:" in err and "steps go backwards, first at row 31: step 1 after step 30 (row 30)" in err
    assert "mixes several runs" in (run / "report" / "index.html").read_text()
    # one run, with the trainer's final summary row repeating the last step: no warning
    clean = write_run(tmp_path / "clean", sgpo_rows(30) + [{"step": 30, "train_runtime": 1.0}])
    assert report_main([str(clean)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_report_shows_the_run_settings_by_topic(tmp_path):
    import yaml

    run = write_run(tmp_path / "run", sgpo_rows(10))
    settings = {
        "output_dir": str(run),
        "learning_rate": 1e-5,
        "num_generations": 4,
        "distill_coef": 0.5,
        "instance_weighting": "marginal",
        "reward_funcs": ["accuracy"],
        "adam_beta1": 0.9,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    assert report_main([str(run)]) == 0
    page = parse(run / "report" / "index.html")
    assert "Settings" in page.headings
    cells = page.cells
    last = {c: i for i, c in enumerate(cells)}  # the settings tables come last on the page
    for key, shown in [
        ("num_generations", "4"),
        ("distill_coef", "0.5"),
        ("instance_weighting", "marginal"),
        ("reward_funcs", '["accuracy"]'),
        ("learning_rate", "1e-05"),
        ("adam_beta1", "0.9"),
    ]:
        assert cells[last[key] + 1] == shown
    text = (run / "report" / "index.html").read_text()
    # grouped: the rollouts table comes before the distillation one, the rest is folded away
    assert text.index("num_generations") < text.index("distill_coef") < text.index("adam_beta1")
    assert "<summary>other settings (1)</summary>" in text
    # a broken file is a warning, not a crash
    (run / "config.yaml").write_text("a: [1,\n", encoding="utf-8")
    assert report_main([str(run)]) == 0
    assert "config.yaml: not shown, not readable YAML" in (run / "report" / "index.html").read_text()


# ---------------------------------------------------------------------------------------- issue 20


def test_report_leaves_out_evaluations_of_earlier_weights(tmp_path, capsys):
    # `sgpo eval --guided` of a model folder, then its weights change (retrained, re-saved), then `sgpo
    # eval` again: the report shows the evaluation of the weights there now only, says how many it left
    # out, titles a plain model folder "Model", and puts the eval chart under "Evaluation"
    from sgpo.cli import main
    from sgpo.testing import build_tiny_model, build_tiny_tokenizer, tiny_arithmetic_rows

    tok = build_tiny_tokenizer()
    model_dir = tmp_path / "model"
    build_tiny_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_arithmetic_rows(4)))
    common = ["--model", str(model_dir), "--benchmark", str(data), "--max-new-tokens", "4"]
    assert main(["eval", *common, "--guided"]) == 0
    build_tiny_model(tok, seed=1).save_pretrained(model_dir)  # new weights in the same folder
    assert main(["eval", *common]) == 0
    capsys.readouterr()
    assert report_main([str(model_dir)]) == 0
    err = capsys.readouterr().err
    assert "left out 1 evaluation(s) of earlier weights (the model's files changed since they ran): eval/heldout-guided" in err
    page = parse(model_dir / "report" / "index.html")
    assert page.headings[0].startswith("Model ")  # not a training run
    html_text = (model_dir / "report" / "index.html").read_text()
    assert "eval/heldout —" in html_text and "eval/heldout-guided —" not in html_text
    body = html_text[html_text.index("<h2>Evaluation</h2>") :]
    assert "src='eval.png'" in body.split("<h2>", 2)[1]  # the chart in the Evaluation section, not among the curves


def test_panels_have_whole_step_ticks_and_labels_tell_values_apart():
    from sgpo.evaluation.report import distinct_labels, panel_figure

    rows = [{"step": s, "reward/auto": 0.1 * s} for s in (1, 2, 3)]
    fig = panel_figure(rows, "r", "r", [("reward/auto", "auto")], [])
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)  # not 1.5, 2.5
    assert distinct_labels([0.025, 0.033, 0.5]) == ["0.025", "0.033", "0.500"]
    assert distinct_labels([0.25, 0.5, 0.25]) == ["0.25", "0.50", "0.25"]
