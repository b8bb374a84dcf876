"""Problem families of the strategy world, and the oracle ("strong model") that solves them.

Every family is one *list procedure*: a running value is started on the first number of a list and
updated at every next number; the final running value is the answer (always one integer). A problem
names its family only through a question phrased in everyday words ("which value is the biggest?"),
drawn from a few paraphrases; the oracle's worked solution names the procedure ("method : running
maximum"), then writes the trace `number>running value` for every number, then the boxed answer:

    problem:  which value is the biggest ? list : 3 7 1 9 4
    response: method : running maximum . 3>3 7>7 1>7 9>9 4>9 . answer : \\boxed{9}

A family with a parameter restates it before the trace (`target : 4 .`), so every step compares with
a nearby token. (The trace is written without spaces around `>`: with Qwen2's pre-tokeniser, where every digit is its
own token and a space before a digit is a token too, a step costs 4 tokens instead of 6.)

The choice of procedure shows in the text exactly once, in the method phrase: every later token is a
function of the method phrase and the problem. The method phrase is therefore the strategy-critical
span of a response (`critical_spans`).

Everything here is pure and deterministic: a problem is a function of a `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: the numbers of a list are digits in this range; lists have LIST_LENGTH[0]..LIST_LENGTH[1] numbers
DIGITS = range(10)
LIST_LENGTH = (5, 8)


@dataclass(frozen=True)
class Instance:
    """One problem of one family: the list, and the family's parameter (the target of `count`)."""

    numbers: tuple[int, ...]
    target: int | None = None


@dataclass(frozen=True)
class Family:
    """One problem family, solved by one procedure.

    `questions` are the paraphrases a problem may ask (`{target}` is the family's parameter, if any).
    `method` is the procedure's name, written by the oracle at the start of every solution.
    `start(x0, inst)` is the running value after the first number; `update(v, x, prev, inst)` the value
    after number `x` (with `prev` the number before it). The last running value is the answer.
    The `approach`, `insight`, `start_rule`, `update_rule` and (optional) `pitfall` phrases are the
    abstract, number-free description of the procedure that a reader (the extractor) knows for this
    method; they are terse because every guided prompt carries them and the model is tiny.
    """

    name: str
    questions: tuple[str, ...]
    method: str
    start: Callable[[int, Instance], int]
    update: Callable[[int, int, int, Instance], int]
    approach: str
    insight: str
    start_rule: str
    update_rule: str
    pitfall: str | None = None
    has_target: bool = False

    def trace(self, inst: Instance) -> list[int]:
        """The running value after every number of the list."""
        xs = inst.numbers
        values = [self.start(xs[0], inst)]
        for prev, x in zip(xs, xs[1:]):
            values.append(self.update(values[-1], x, prev, inst))
        return values

    def answer(self, inst: Instance) -> int:
        return self.trace(inst)[-1]


FAMILIES: tuple[Family, ...] = (
    Family(
        name="max",
        questions=("which value is the biggest ?", "what is the largest number ?", "find the top value ."),
        method="running maximum",
        start=lambda x0, inst: x0,
        update=lambda v, x, prev, inst: max(v, x),
        approach="keep a running maximum",
        insight="the largest number is never replaced",
        start_rule="keep the first number",
        update_rule="keep the larger of it and each next number",
    ),
    Family(
        name="min",
        questions=("which value is the smallest ?", "what is the lowest number ?", "find the bottom value ."),
        method="running minimum",
        start=lambda x0, inst: x0,
        update=lambda v, x, prev, inst: min(v, x),
        approach="keep a running minimum",
        insight="the smallest number is never replaced",
        start_rule="keep the first number",
        update_rule="keep the smaller of it and each next number",
    ),
    Family(
        name="sum_mod10",
        questions=(
            "what is the last digit of the total ?",
            "what is the units digit of the sum ?",
            "add everything up ; which digit ends the result ?",
        ),
        method="running sum of last digits",
        start=lambda x0, inst: x0,
        update=lambda v, x, prev, inst: (v + x) % 10,
        approach="add up the numbers keeping only the last digit",
        insight="the last digit of a sum depends only on last digits",
        start_rule="keep the first number",
        update_rule="add each next number and keep the last digit",
        pitfall="drop the tens at every step",
    ),
    Family(
        name="count_target",
        questions=(
            "how many times does {target} appear ?",
            "how often is {target} in the list ?",
            "how many copies of {target} are there ?",
        ),
        method="running count of the target",
        start=lambda x0, inst: int(x0 == inst.target),
        update=lambda v, x, prev, inst: v + int(x == inst.target),
        approach="count the numbers equal to the target",
        insight="the target is the number named in the question",
        start_rule="count the first number if it is the target",
        update_rule="add one for each next number equal to the target",
        has_target=True,
    ),
    Family(
        name="count_rises",
        questions=(
            "how many times does the list go up ?",
            "how many steps climb ?",
            "how often is a number bigger than the one before it ?",
        ),
        method="running count of rises",
        start=lambda x0, inst: 0,
        update=lambda v, x, prev, inst: v + int(x > prev),
        approach="count the numbers larger than the one before",
        insight="the first number is never a rise",
        start_rule="start at zero",
        update_rule="add one when a number is larger than the one before",
        pitfall="equal neighbours are not a rise",
    ),
    Family(
        name="count_even",
        questions=(
            "how many even numbers are there ?",
            "how many values can be split into two equal halves ?",
            "how many numbers are divisible by two ?",
        ),
        method="running count of even numbers",
        start=lambda x0, inst: int(x0 % 2 == 0),
        update=lambda v, x, prev, inst: v + int(x % 2 == 0),
        approach="count the even numbers",
        insight="a number is even when halving it leaves no rest",
        start_rule="count the first number if it is even",
        update_rule="add one for each next number that is even",
        pitfall="zero is even",
    ),
)

FAMILY_BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
FAMILY_BY_METHOD: dict[str, Family] = {f.method: f for f in FAMILIES}


def get_family(name: str) -> Family:
    try:
        return FAMILY_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r} (families: {', '.join(FAMILY_BY_NAME)})") from None


def sample_instance(family: Family, rng: random.Random) -> Instance:
    """A random list (and target) for `family`."""
    n = rng.randint(*LIST_LENGTH)
    if not family.has_target:
        return Instance(tuple(rng.choice(DIGITS) for _ in range(n)))
    # the target occurs 0-3 times, uniformly: with random lists the count would be 0 or 1 most of the
    # time, and always answering the most common count would score well without any counting
    target = rng.choice(DIGITS)
    hits = set(rng.sample(range(n), rng.randint(0, 3)))
    others = [d for d in DIGITS if d != target]
    numbers = tuple(target if i in hits else rng.choice(others) for i in range(n))
    return Instance(numbers, target)


def problem_text(family: Family, inst: Instance, question: str) -> str:
    nums = " ".join(str(x) for x in inst.numbers)
    return f"{question.format(target=inst.target)} list : {nums}"


METHOD_PREFIX = "method : "


def oracle_response(family: Family, inst: Instance) -> tuple[str, list[list[int]]]:
    """The oracle's worked solution and its strategy-critical character spans ([start, end), into the
    response): the method phrase, where the choice of procedure shows."""
    values = family.trace(inst)
    steps = " ".join(f"{x}>{v}" for x, v in zip(inst.numbers, values))
    setup = f"target : {inst.target} . " if family.has_target else ""
    response = f"{METHOD_PREFIX}{family.method} . {setup}{steps} . answer : \\boxed{{{values[-1]}}}"
    start = len(METHOD_PREFIX)
    return response, [[start, start + len(family.method)]]


def parse_numbers(problem: str) -> list[int]:
    """The list of a problem text (the digits after `list :`)."""
    _, sep, tail = problem.rpartition("list :")
    if not sep:
        raise ValueError(f"not a strategy-world problem (no 'list :'): {problem!r}")
    return [int(t) for t in tail.split()]


def families_named(names: Sequence[str] | None) -> list[Family]:
    return list(FAMILIES) if names is None else [get_family(n) for n in names]
