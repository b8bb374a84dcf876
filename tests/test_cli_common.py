"""What every `sgpo` sub-command shares, through the real entry point (`sgpo.cli.main`): both flag
styles, the old option names as aliases, negative numbers as values, one error prefix."""

from __future__ import annotations

import importlib
import json

import pytest

from sgpo.cli import COMMANDS, main
from sgpo.commands.common import dashed_flags, join_negative_values


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # underscores reach the option (argparse alone: "unrecognized arguments: --max_new_tokens")
        (
            ["eval", "--model", "m", "--benchmark", "b", "--max_new_tokens", "0"],
            "sgpo eval: error: --k, --max-new-tokens and --limit must be >= 1",
        ),
        (
            ["selectivity", "--model", "m", "--input", "d", "--out", "o", "--max_new_tokens", "0"],
            "sgpo selectivity: error: --limit and --max-new-tokens must be >= 1 and --kl-temperature > 0",
        ),
        (
            ["score-strategies", "--input", "d", "--output", "o.jsonl", "--model", "m", "--max_new_tokens", "0"],
            "sgpo score-strategies: error: --max-new-tokens must be >= 1, got 0",
        ),
        (
            ["extract", "--input", "d", "--output", "o.jsonl", "--max_new_tokens", "0"],  # --max-tokens' alias
            "sgpo extract: error: --max-tokens must be >= 1, got 0",
        ),
        # the old names of one thing still work: selectivity's --data and --n, score-strategies' --prompt-template
        (
            ["selectivity", "--model", "m", "--data", "d", "--out", "o", "--n", "0"],
            "sgpo selectivity: error: --limit and --max-new-tokens must be >= 1 and --kl-temperature > 0",
        ),
        (
            ["score-strategies", "--data", "d", "--out", "o.jsonl", "--model", "m", "--prompt-template", "x", "--k", "0"],
            "sgpo score-strategies: error: --k must be >= 1, got 0",
        ),
        # a negative number is a value, in scientific notation too
        (
            ["eval", "--model", "m", "--benchmark", "b", "--temperature", "-1e-1", "--k", "2"],
            "sgpo eval: error: temperature must be >= 0, got -0.1",
        ),
    ],
)
def test_flag_styles_aliases_and_negative_values_reach_each_command(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b").write_text(json.dumps({"problem": "p", "answer": "1"}) + "\n")
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and "unrecognized arguments" not in err and "Traceback" not in err


def test_report_and_demo_take_output_aliases_and_underscores(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    assert main(["report", str(run), "--output", str(tmp_path / "page")]) == 0
    assert (tmp_path / "page" / "index.html").is_file()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["demo", "--output", str(tmp_path / "busy"), "--no_progress"]) == 2
    assert "sgpo demo: error:" in capsys.readouterr().err and (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sgpo <command>") and all(name in err for name in COMMANDS)


def test_every_dashed_option_of_every_command_is_accepted_with_underscores():
    for name, (module, _) in COMMANDS.items():
        if name == "train":  # Hugging Face's parser registers both spellings itself
            continue
        parser = importlib.import_module(module).build_parser()
        dashed = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and "-" in o[2:]]
        for option in dashed:
            assert dashed_flags([option.replace("-", "_").replace("__", "--", 1), "x"], parser) == [option, "x"], (name, option)


def test_negative_values_are_joined_to_their_option_only():
    assert join_negative_values(["--lr", "-1e-3", "--k", "-2", "--x", "-.5", "--flag", "--y", "3"]) == [
        "--lr=-1e-3",
        "--k=-2",
        "--x=-.5",
        "--flag",
        "--y",
        "3",
    ]
    assert join_negative_values(["-1", "--a=1", "-2", "--", "-3"]) == ["-1", "--a=1", "-2", "--", "-3"]
