"""Answer extraction and checking: equivalent notations, wrong answers, no answer, pathological input."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import types

import pytest

from sgpo.answers import MAX_ANSWER_CHARS, extract_boxed
from sgpo.verify import Check, Verifier, answers_equal, judge, normalize_answer, quick_verdict

# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # the last box
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\fbox{7}", "7"),
        ("\\boxed 5$ done", "5"),
        ("no box here", None),
        ("\\boxed{3 + {4}", None),  # unbalanced
        ("\\boxed{}", ""),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_boxed_is_bounded_on_pathological_text():
    """Megabytes of text, a box opened and never closed, 100k nested braces: all cheap."""
    cases = [
        "x" * 5_000_000 + "\\boxed{4}",
        "\\boxed{" + "{" * 1_000_000,
        "\\boxed{" + "a" * 3_000_000,
        "\\boxed " + "9" * 3_000_000,
        "\\boxed{" * 200_000,
    ]
    t0 = time.perf_counter()
    results = [extract_boxed(c) for c in cases]
    elapsed = time.perf_counter() - t0
    assert results == ["4", None, None, None, None]
    assert elapsed < 0.5, f"extraction took {elapsed:.2f}s"
    assert extract_boxed("\\boxed{" + "a" * MAX_ANSWER_CHARS + "}") == "a" * MAX_ANSWER_CHARS
    assert extract_boxed("\\boxed{" + "a" * (MAX_ANSWER_CHARS + 1) + "}") is None


# ----------------------------------------------------------------------------- verdicts

EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{1}{2}", "\\frac12"),
    ("x=3", "3"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
    ("1 + x", "x + 1"),  # spaces on both sides: still an expression, not a sequence
    ("(x+1)^2", "x^2+2x+1"),
    ("3\\sqrt{3}", "\\sqrt{27}"),
    ("30^\\circ", "30"),
    ("1,000", "1000"),
    ("007", "7"),
    ("$\\left( 1, 2 \\right]$", "(1,2]"),
    ("\\text{(B)}", "B"),
    ("3 7 1", "3 7 1"),
]
WRONG = [
    ("5", "6"),
    ("0.33", "\\frac{1}{3}"),
    ("[1,2)", "[1,2]"),
    ("371", "3 7 1"),  # a sequence answer is compared token by token
    ("3 1 7", "3 7 1"),
    ("x+2", "x+1"),
    ("", "1"),
]


@pytest.mark.parametrize("pred, gold", EQUIVALENT)
def test_equivalent_notations_in_process(pred, gold):
    assert answers_equal(pred, gold)


@pytest.mark.parametrize("pred, gold", WRONG)
def test_wrong_answers_in_process(pred, gold):
    assert not answers_equal(pred, gold)


def test_quick_verdicts_need_no_parser():
    assert quick_verdict("42", "042") is True
    assert quick_verdict("41", "42") is False
    assert quick_verdict(None, "1") is False
    assert quick_verdict("x" * (MAX_ANSWER_CHARS + 1), "1") is False
    assert quick_verdict("\\frac{1}{2}", "0.5") is None  # math-verify decides
    assert normalize_answer(" $\\left(1, 2\\right)$ ") == "(1,2)"


def test_in_process_check_refuses_other_threads():
    """math-verify's timeout is a SIGALRM timer: off the main thread it cannot work, and swallowing
    that error is how other projects scored every answer 0. Here it is a clear error."""
    errors = []

    def run():
        try:
            judge("\\frac{1}{2}", "0.5", 1.0)
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors and "Verifier(num_workers>=1)" in errors[0]


def test_in_process_soft_timeout_counts_as_timed_out():
    def mine(signum, frame):  # a handler the caller had installed
        raise AssertionError("our handler must not fire")

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        t0 = time.perf_counter()
        assert judge("10^{10^{10^{10}}}", "5", 0.5) == (False, True)
        assert time.perf_counter() - t0 < 3
        assert signal.getsignal(signal.SIGALRM) is mine  # restored
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no timer left running
    finally:
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- the pool

PATHOLOGICAL = [
    "10^{10^{10^{10}}}",  # a power tower sympy tries to evaluate
    "\\sqrt{" * 300 + "2" + "}" * 300,  # deep nesting
    "{" * 1500 + "1" + "}" * 1500,
    "(" * 900 + "1" + ")" * 900,
    "99999999^{99999999}",
]


@pytest.fixture(scope="module")
def pool():
    with Verifier(num_workers=2, timeout=10.0) as v:
        yield v


def test_pool_agrees_with_in_process_verdicts(pool):
    preds = [p for p, _ in EQUIVALENT + WRONG] + [None]
    golds = [g for _, g in EQUIVALENT + WRONG] + ["1"]
    got = pool.check_answers(preds, golds)
    assert [c.correct for c in got] == [True] * len(EQUIVALENT) + [False] * (len(WRONG) + 1)
    assert all(isinstance(c, Check) and not c.timed_out for c in got)
    assert [c.extracted for c in got] == preds


def test_pool_checks_completions_without_a_box(pool):
    got = pool.check(["I think it is 4.", "\\boxed{4}", "\\boxed{4"], ["4", "4", "4"])
    assert [(c.correct, c.extracted) for c in got] == [(False, None), (True, "4"), (False, None)]


def test_pathological_answers_time_out_quickly_and_are_counted():
    preds = PATHOLOGICAL + ["\\frac{8}{2}"]
    with Verifier(num_workers=2, timeout=1.0) as v:
        t0 = time.perf_counter()
        got = v.check_answers(preds, ["5"] * len(PATHOLOGICAL) + ["4"])
        elapsed = time.perf_counter() - t0
        assert v.num_timeouts == sum(c.timed_out for c in got)
    assert got[-1] == Check(True, "\\frac{8}{2}", False)  # the sane answer next to them is still judged
    assert not any(c.correct for c in got[:-1])
    assert sum(c.timed_out for c in got) >= 3, [c.timed_out for c in got]  # at least the tower, the braces, the power
    # ~1 s per pathological answer on two workers, plus their start-up; unbounded without the deadlines
    assert elapsed < 15, f"{elapsed:.1f}s"


def test_megabyte_completions_are_cheap(pool):
    completions = ["step " * 400_000 + "\\boxed{\\frac{1}{2}}", "\\boxed{" * 100_000, "}" * 2_000_000]
    t0 = time.perf_counter()
    got = pool.check(completions, ["0.5", "1", "1"])
    assert [c.correct for c in got] == [True, False, False]
    assert time.perf_counter() - t0 < 3


# Judges that misbehave the way C code can: they ignore the soft timer, or kill their process.
# (Module-level, so the worker processes can import them.)
def ignores_soft_timer(pred, gold, timeout):
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    time.sleep(60)
    return True, False


def kills_its_process(pred, gold, timeout):
    if pred == "crash":
        os._exit(3)
    return pred == gold, False


def test_stuck_worker_is_killed_at_the_hard_deadline_and_replaced():
    with Verifier(num_workers=1, timeout=0.5, judge_fn=ignores_soft_timer) as v:
        t0 = time.perf_counter()
        got = v.check_answers(["a", "b"], ["c", "d"])  # neither is settled without the judge
        elapsed = time.perf_counter() - t0
        assert got == [Check(False, "a", True), Check(False, "b", True)]
        assert v.num_timeouts == 2 and v.num_worker_restarts == 2
        # two hard deadlines (0.5 s + 1 s grace each) and two replacement start-ups, not 2 × 60 s
        assert elapsed < 20, f"{elapsed:.1f}s"


def test_a_dying_worker_costs_one_answer():
    with Verifier(num_workers=1, timeout=5, judge_fn=kills_its_process) as v:
        got = v.check_answers(["x", "crash", "y"], ["x2", "z", "y2"])
        assert got == [Check(False, "x", False), Check(False, "crash", True), Check(False, "y", False)]
        got = v.check_answers(["same-a"], ["same-a "])  # equal after normalisation: no worker needed
        assert got == [Check(True, "same-a", False)]
        assert v.num_worker_restarts == 1


def test_verifier_arguments_are_checked():
    with pytest.raises(ValueError, match="timeout"):
        Verifier(1, timeout=0)
    with pytest.raises(ValueError, match="num_workers"):
        Verifier(-1)
    with pytest.raises(ValueError, match="2 answers but 1 gold"):
        Verifier(0).check_answers(["1", "2"], ["1"])


def test_an_unimportable_judge_is_a_clear_error(monkeypatch):
    def local_judge(pred, gold, timeout):
        return True, False

    with pytest.raises(ValueError, match="judge_fn must be a module-level function"):
        Verifier(num_workers=1, judge_fn=local_judge)
    # importable here but not in the workers (as a function of a script's __main__ would be)
    ghost = types.ModuleType("sgpo_ghost_module")
    local_judge.__module__, local_judge.__qualname__ = ghost.__name__, "judge"
    ghost.judge = local_judge
    monkeypatch.setitem(sys.modules, ghost.__name__, ghost)
    with Verifier(num_workers=1, judge_fn=local_judge) as v:
        with pytest.raises(RuntimeError, match="could not read its task .*No module named 'sgpo_ghost_module'"):
            v.check_answers(["a"], ["b"])
        assert v._workers == []  # nothing left holding a task


def test_a_script_without_main_guard_can_use_the_verifier(tmp_path):
    # multiprocessing's spawn/forkserver children re-run an unguarded __main__ script, which then
    # starts verifiers recursively: the workers are plain subprocesses, so this just works
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "train.py"
    script.write_text('from sgpo.rewards import accuracy_reward\nprint(accuracy_reward(["x"], ["so \\\\boxed{1/2}"], ["0.5"]))\n')
    env = dict(__import__("os").environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[1.0]"
