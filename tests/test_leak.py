"""The leak filter: gold / response answers in several notations, problem-number copying, non-leaks."""

from fractions import Fraction

import pytest

from sgpo.strategies.base import Strategy
from sgpo.strategies.leak import LeakConfig, LeakFilter, numbers_in, parse_number


def strat(
    *steps: str, approach: str = "Set up an equation for the unknown.", insight: str = "The constraint is linear."
) -> Strategy:
    return Strategy(approach=approach, key_insight=insight, steps=list(steps) or ["Solve it."])


@pytest.fixture(scope="module")
def leak():
    with LeakFilter() as f:
        yield f


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1/2", Fraction(1, 2)),
        ("\\frac{1}{2}", Fraction(1, 2)),
        ("\\dfrac12", Fraction(1, 2)),
        ("$0.5$", Fraction(1, 2)),
        ("-\\tfrac{3}{4}", Fraction(-3, 4)),
        ("\\frac{-3}{4}", Fraction(-3, 4)),
        ("1,000", Fraction(1000)),
        ("50\\%", Fraction(50)),
        ("\\text{12}", Fraction(12)),
        ("2\\sqrt{3}", None),
        ("x+1", None),
        ("(1, 2)", None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


def test_numbers_in_signs_and_notations():
    # "x - 3" is a subtraction (3), "is -5" a negative number, \frac and a/b are one value each
    # (a/b's parts are literals too), 1,200 counts as 1200 and as the list 1, 200.
    got = numbers_in("take \\frac{1}{2}, then x - 3; the root is -5; 3/4 of 1,200")
    assert got == [
        Fraction(1, 2),
        Fraction(3, 4),
        Fraction(3),
        Fraction(-5),
        Fraction(3),
        Fraction(4),
        Fraction(1200),
        Fraction(1),
        Fraction(200),
    ]


@pytest.mark.parametrize(
    "gold, step",
    [
        ("1/2", "Halve it: the share is \\frac{1}{2} of the total."),
        ("1/2", "The ratio comes out as 0.5."),
        ("\\frac{1}{2}", "Each part is 1/2."),
        ("\\frac{1}{2}", "Use \\dfrac12 as the weight."),
        ("0.5", "Multiply by \\tfrac{1}{2}."),
        ("0.5", "Obtain 2/4 at the end."),
        ("-3", "The smaller root is -3."),
        ("1000", "There are 1,000 ways."),
        ("1,000", "Count 1000 arrangements."),
        ("42", "so the total is 42 apples"),
        ("1", "Conclude that the answer is 1."),  # a small integer, stated as the answer
        ("-1", "so the final answer is -1."),
        ("0", "Result: 0"),
        ("\\sqrt{3}", "The side is $\\sqrt{3}$."),  # textual after normalisation
        ("x^2 + 1", "The polynomial is $x^{2}+1$."),  # symbolic: math-verify
        ("2\\sqrt{3}", "The distance is $\\sqrt{12}$."),  # symbolic: math-verify
        ("\\frac{\\sqrt{3}}{2}", "The height is $h = \\frac{\\sqrt3}{2}$."),  # right-hand side of "="
        ("\\text{Tuesday}", "It falls on tuesday."),
    ],
)
def test_gold_answer_leaks(leak, gold, step):
    found = leak.check(strat(step), problem="A problem.", answer=gold)
    assert found is not None and found.reason == "leak_gold_answer", found


@pytest.mark.parametrize(
    "gold, step",
    [
        ("1/2", "Split the set into two equal halves."),
        ("15", "Count 150 objects and 5 boxes."),  # 15 only as part of other numbers
        ("-3", "Compute x - 3 for each candidate."),  # subtraction, not the number -3
        ("3", "The other root is -3."),
        ("1", "Subtract 1 from both sides."),  # small integer used as method
        ("0.25", "Multiply by \\frac{1}{2} twice."),
        ("2\\sqrt{3}", "Use the distance formula $d=\\sqrt{(x_2-x_1)^2+(y_2-y_1)^2}$."),
        ("x^2 + 1", "Expand the product and collect like terms."),
    ],
)
def test_not_leaks(leak, gold, step):
    assert leak.check(strat(step), problem="A problem.", answer=gold) is None


def test_stated_answer_does_not_run_across_lines(leak):
    # "... is the answer" ends one step; the next step starting with 0 is not a stated answer 0
    s = strat("The last kept value is the answer", "0 is where the count starts")
    assert leak.check(s, "P", answer="0") is None
    assert leak.check(strat("The answer is", "0"), "P", answer="0") is None


def test_response_answer_leak_when_it_differs_from_gold(leak):
    # the response got 12 (wrong), the gold is 13: a strategy saying 12 leaks the response's answer
    found = leak.check(strat("The count is 12."), "Count them.", response="... so \\boxed{12}", answer="13")
    assert found is not None and found.reason == "leak_response_answer"
    # and with no gold answer at all, the response's final answer is what is checked
    found = leak.check(strat("The result is \\frac{7}{3}."), "Find it.", response="Thus \\boxed{7/3}.", answer=None)
    assert found is not None and found.reason == "leak_response_answer"
    assert leak.check(strat("Divide and simplify."), "Find it.", response="Thus \\boxed{7/3}.") is None


def test_boxed_in_strategy_is_rejected(leak):
    found = leak.check(strat("Write the result as \\boxed{x}."), "P", answer="5")
    assert found is not None and found.reason == "leak_boxed"
    with LeakFilter(LeakConfig(reject_boxed=False)) as lenient:
        assert lenient.check(strat("Write the result as \\boxed{x}."), "P", answer="5") is None


def test_checks_cover_every_field(leak):
    s = Strategy(approach="a", key_insight="b", steps=["c"], pitfalls=["Do not stop at 0.75."])
    found = leak.check(s, "P", answer="3/4")
    assert found is not None and found.reason == "leak_gold_answer"


def test_problem_number_copying_is_optional():
    problem = "A tank holds 350 litres; 48 litres flow in per hour and 17 flow out. After 6 hours?"
    s = strat("Start from 350, add 48 and subtract 17 per hour.", "Multiply the net rate by 6.")
    with LeakFilter() as default:
        assert default.check(s, problem, answer="536") is None  # off by default
    with LeakFilter(LeakConfig(max_problem_numbers=2)) as strict:
        found = strict.check(s, problem, answer="536")
        assert found is not None and found.reason == "leak_problem_numbers"
        assert "4 of the problem's numbers (6, 17, 48, 350)" in found.detail
        # two copied numbers are allowed; 2 itself is ignored (|v| <= problem_number_ignore_limit)
        assert strict.check(strat("Add 48 and subtract 17, then double (times 2)."), problem, answer="536") is None


def test_fingerprint_changes_with_config():
    assert LeakConfig().fingerprint() == LeakConfig().fingerprint()
    assert LeakConfig().fingerprint() != LeakConfig(max_problem_numbers=3).fingerprint()
