"""Problem families of the strategy world, and the oracle ("strong model") that solves them.

Every family is one *list procedure*: a running value is started on the first number of a list and
updated at every next number; the final running value is the answer (always one integer). A problem
names its family only through a question phrased in everyday words, drawn from a few paraphrases;
the oracle's worked solution names the procedure ("method : ..."), then writes the trace
`number<notation>running value` for every number, then the boxed answer:

    problem:  what is the total of the even numbers ? list : 3 4 1 8 2
    response: method : add the even numbers . 3>0 4=4 1:4 8>12 2=14 . answer : \\boxed{14}

The sets of families (`WORLDS`):

- **v2** (the default, docs/strategy-world.md): six *filtered running sums* — every number, the even
  ones, the odd ones, those from five up, those up to four, every other one. Their answers spread
  over 0–72 (no majority answer scores above ~0.11) and a wrong procedure is right by coincidence
  ~3% of the time. The oracle writes each step in one of three equivalent notations (`>`, `=`, `:`),
  drawn per step, so a solution is one of many valid ones and a model that imitates the oracle has a
  non-degenerate next-token distribution on every step; each family also has wordings that only the
  generalisation split (`novel`) uses.
- **v2.1**: v2 with six step notations and held-out wordings made of words the other wordings use
  (the two parts of v2 that failed its gate; docs/results.md).
- **v2.4**: v2.1 with a separator drawn between every two steps (a space, `,` or `;`), so that a second
  token of every step is free for the oracle and its teacher (docs/results.md, "World v2.4").
- **v1** (the first world, kept for the experiments measured on it): max, min, sum_mod10,
  count_target, count_rises, count_even, one notation.

A family with a parameter (v1's `count_target`) restates it before the trace (`target : 4 .`).
(The trace is written without spaces around the notation: with Qwen2's pre-tokeniser, where every
digit is its own token and a space before a digit is a token too, a step costs 4 tokens instead of 6.)

The choice of procedure shows in the text exactly once, in the method phrase: every later token is a
function of the method phrase, the problem and the notations drawn. The method phrase is therefore
the strategy-critical span of a response (`critical_spans`).

Everything here is pure and deterministic: a problem is a function of a `random.Random`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

#: the numbers of a list are digits in this range; lists have LIST_LENGTH[0]..LIST_LENGTH[1] numbers
#: unless the world says otherwise (`WorldSpec.list_length`)
DIGITS = range(10)
LIST_LENGTH = (5, 8)
#: the step notations of v2's oracle, drawn per step (v1 writes `>` only)
NOTATIONS = (">", "=", ":")
#: v2.1's: six, so that the teacher's next-token distribution is spread on every step (ln 6 nats
#: on each notation token, against v2's ln 3, which left its mean over non-critical tokens < 0.2)
NOTATIONS_V2_1 = (">", "=", ":", "~", "|", "/")
#: v2.4's step separators, drawn per gap between two steps (earlier worlds separate steps by a space):
#: a second free choice per step that costs no token, so that more of a solution is free for the
#: teacher (docs/results.md, "World v2.4": off the notations the teacher was one-hot and C4's
#: Spearman(KL, NLL) stayed above 0.8)
SEPARATORS_V2_4 = (" ", ",", ";")


@dataclass(frozen=True)
class Instance:
    """One problem of one family: the list, and the family's parameter (the target of `count`)."""

    numbers: tuple[int, ...]
    target: int | None = None


@dataclass(frozen=True)
class Family:
    """One problem family, solved by one procedure.

    `questions` are the paraphrases a problem may ask (`{target}` is the family's parameter, if any);
    `novel_questions` are further paraphrases that only the generalisation split (`novel`) asks.
    `method` is the procedure's name, written by the oracle at the start of every solution.
    `start(x0, inst)` is the running value after the first number; `update(v, x, prev, inst, i)` the
    value after number `x` at position `i` (with `prev` the number before it). The last running value
    is the answer. `notations` are the step notations the oracle draws from (one per step),
    `separators` what it writes between two steps (one drawn per gap).
    The `approach`, `insight`, `start_rule`, `update_rule` and (optional) `pitfall` phrases are the
    abstract, number-free description of the procedure that a reader (the extractor) knows for this
    method; they are terse because every guided prompt carries them and the model is tiny.
    """

    name: str
    questions: tuple[str, ...]
    method: str
    start: Callable[[int, Instance], int]
    update: Callable[[int, int, int, Instance, int], int]
    approach: str
    insight: str
    start_rule: str
    update_rule: str
    pitfall: str | None = None
    has_target: bool = False
    novel_questions: tuple[str, ...] = ()
    notations: tuple[str, ...] = (">",)
    separators: tuple[str, ...] = (" ",)

    def trace(self, inst: Instance) -> list[int]:
        """The running value after every number of the list."""
        xs = inst.numbers
        values = [self.start(xs[0], inst)]
        for i, (prev, x) in enumerate(zip(xs, xs[1:]), start=1):
            values.append(self.update(values[-1], x, prev, inst, i))
        return values

    def answer(self, inst: Instance) -> int:
        return self.trace(inst)[-1]


def filtered_sum(
    name: str,
    keep: Callable[[int, int], bool],
    method: str,
    questions: tuple[str, ...],
    novel: tuple[str, ...],
    approach: str,
    insight: str,
    rule: str,
) -> Family:
    """A v2 family: the running sum of the numbers `x` at position `i` (0-based) with `keep(x, i)`."""
    return Family(
        name=name,
        questions=questions,
        method=method,
        start=lambda x0, inst: x0 if keep(x0, 0) else 0,
        update=lambda v, x, prev, inst, i: v + x if keep(x, i) else v,
        approach=approach,
        insight=insight,
        start_rule="start the total at zero",
        update_rule=rule,
        novel_questions=novel,
        notations=NOTATIONS,
    )


WORLD_V1: tuple[Family, ...] = (
    Family(
        name="max",
        questions=("which value is the biggest ?", "what is the largest number ?", "find the top value ."),
        method="running maximum",
        start=lambda x0, inst: x0,
        update=lambda v, x, prev, inst, i: max(v, x),
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
        update=lambda v, x, prev, inst, i: min(v, x),
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
        update=lambda v, x, prev, inst, i: (v + x) % 10,
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
        update=lambda v, x, prev, inst, i: v + int(x == inst.target),
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
        update=lambda v, x, prev, inst, i: v + int(x > prev),
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
        update=lambda v, x, prev, inst, i: v + int(x % 2 == 0),
        approach="count the even numbers",
        insight="a number is even when halving it leaves no rest",
        start_rule="count the first number if it is even",
        update_rule="add one for each next number that is even",
        pitfall="zero is even",
    ),
)

WORLD_V2: tuple[Family, ...] = (
    filtered_sum(
        "sum", lambda x, i: True, "add every number",
        ("what do the numbers add up to ?", "what is the total of the list ?", "sum up the list ."),
        ("how much is everything together ?",),
        "add up every number", "each number counts once", "add each number to the total",
    ),
    filtered_sum(
        "sum_even", lambda x, i: x % 2 == 0, "add the even numbers",
        ("what is the total of the even numbers ?", "add up the values that halve evenly .", "sum the numbers divisible by two ."),
        ("how much do the even ones make ?",),
        "add up only the even numbers", "odd numbers are skipped", "add a number only when it is even",
    ),
    filtered_sum(
        "sum_odd", lambda x, i: x % 2 == 1, "add the odd numbers",
        ("what is the total of the odd numbers ?", "add up the values that do not halve evenly .",
         "sum the numbers not divisible by two ."),
        ("how much do the odd ones make ?",),
        "add up only the odd numbers", "even numbers are skipped", "add a number only when it is odd",
    ),
    filtered_sum(
        "sum_big", lambda x, i: x >= 5, "add the numbers from five up",
        ("what is the total of the big numbers ?", "add up the values of five or more .", "sum the numbers above four ."),
        ("how much do the large ones make ?",),
        "add up only the numbers from five up", "numbers below five are skipped", "add a number only when it is five or more",
    ),
    filtered_sum(
        "sum_small", lambda x, i: x <= 4, "add the numbers up to four",
        ("what is the total of the small numbers ?", "add up the values below five .", "sum the numbers of four or less ."),
        ("how much do the little ones make ?",),
        "add up only the numbers up to four", "numbers above four are skipped", "add a number only when it is four or less",
    ),
    filtered_sum(
        "sum_alt", lambda x, i: i % 2 == 0, "add every other number",
        ("what is the total of the first , third , fifth ... numbers ?", "add up every second value starting at the front .",
         "sum the numbers in odd places ."),
        ("how much do the alternate ones make ?",),
        "add up every other number starting with the first", "the second , fourth ... numbers are skipped",
        "add a number only at the first , third , fifth ... place",
    ),
)  # fmt: skip

#: v2.1 (docs/results.md, "World v2.1"): v2's families and procedures, changed only where v2 failed
#: its gate: six step notations instead of three (C4, the teacher's spread), and held-out wordings
#: composed of words the other wordings use (C9: v2's held-out wordings used words no training text
#: has, whose embeddings nothing trained). Same names and methods as v2's families.
_NOVEL_V2_1 = {
    "sum": "add up the list .",
    "sum_even": "add up the even values .",
    "sum_odd": "add up the odd values .",
    "sum_big": "add up the big values .",
    "sum_small": "add up the small values .",
    "sum_alt": "what is the total of the numbers in odd places ?",
}
WORLD_V2_1: tuple[Family, ...] = tuple(
    replace(f, notations=NOTATIONS_V2_1, novel_questions=(_NOVEL_V2_1[f.name],)) for f in WORLD_V2
)

#: v2.4 (docs/results.md, "World v2.4"): v2.1's families with a separator drawn between every two steps
#: (`SEPARATORS_V2_4`); the same names and methods again.
WORLD_V2_4: tuple[Family, ...] = tuple(replace(f, separators=SEPARATORS_V2_4) for f in WORLD_V2_1)

#: the family sets a world can be made of; a world names its families (`WorldSpec.families`)
WORLDS: dict[str, tuple[Family, ...]] = {"v1": WORLD_V1, "v2": WORLD_V2, "v2.1": WORLD_V2_1, "v2.4": WORLD_V2_4}
DEFAULT_WORLD = "v2"
FAMILIES: tuple[Family, ...] = WORLDS[DEFAULT_WORLD]  # the default world's families
ALL_FAMILIES: tuple[Family, ...] = WORLD_V1 + WORLD_V2 + WORLD_V2_1 + WORLD_V2_4

#: by name and by method: a name or method of several worlds (v2's, v2.1's and v2.4's families) maps to
#: the newest world's family, whose notations and separators include the older ones' (the extractor
#: parses either)
FAMILY_BY_NAME: dict[str, Family] = {f.name: f for f in ALL_FAMILIES}
FAMILY_BY_METHOD: dict[str, Family] = {f.method: f for f in ALL_FAMILIES}


def world_of(name: str, families: Sequence[Family] | None = None) -> tuple[Family, ...]:
    """The families of the world that family `name` belongs to: `families` when given (a world's
    families, which must include `name`), else the first world (`WORLDS`) with a family of that name
    (v2 for a name v2 and v2.1 share)."""
    if families is not None:
        if not any(f.name == name for f in families):
            raise ValueError(f"family {name!r} is not one of {[f.name for f in families]}")
        return tuple(families)
    return next(w for w in WORLDS.values() if any(f.name == name for f in w)) if name in FAMILY_BY_NAME else get_family(name)


def get_family(name: str) -> Family:
    try:
        return FAMILY_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r} (families: {', '.join(FAMILY_BY_NAME)})") from None


def sample_instance(family: Family, rng: random.Random, length: tuple[int, int] = LIST_LENGTH) -> Instance:
    """A random list of `length[0]`..`length[1]` digits (and a target) for `family`."""
    n = rng.randint(*length)
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


def oracle_response(family: Family, inst: Instance, rng: random.Random | None = None) -> tuple[str, list[list[int]]]:
    """The oracle's worked solution and its strategy-critical character spans ([start, end), into the
    response): the method phrase, where the choice of procedure shows. A family with several
    `notations` draws each step's from `rng` (which it then needs), then, with several `separators`,
    each gap's separator; one with one notation and one separator draws nothing."""
    values = family.trace(inst)
    if (len(family.notations) > 1 or len(family.separators) > 1) and rng is None:
        raise ValueError(f"family {family.name!r} draws its steps' notations or separators: oracle_response needs an rng")
    if len(family.notations) == 1:
        marks = family.notations * len(values)
    else:
        marks = tuple(rng.choice(family.notations) for _ in values)
    if len(family.separators) == 1:
        seps = family.separators * (len(values) - 1)
    else:
        seps = tuple(rng.choice(family.separators) for _ in values[1:])
    steps = "".join(f"{sep}{x}{m}{v}" for sep, x, m, v in zip(("",) + tuple(seps), inst.numbers, marks, values))
    setup = f"target : {inst.target} . " if family.has_target else ""
    response = f"{METHOD_PREFIX}{family.method} . {setup}{steps} . answer : \\boxed{{{values[-1]}}}"
    start = len(METHOD_PREFIX)
    return response, [[start, start + len(family.method)]]


def wording_index(family: Family, problem: str) -> int:
    """The place in `family.questions` of the wording `problem` asks (a family with a target: the
    wording with the question's number in place of `{target}`); ValueError if it asks none of them."""
    question = problem.rpartition("list :")[0].strip()
    for i, q in enumerate(family.questions):
        if q == question or (family.has_target and re.sub(r"\b\d+\b", "{target}", question) == q):
            return i
    raise ValueError(f"{problem!r} is not asked in one of family {family.name!r}'s wordings")


def parse_numbers(problem: str) -> list[int]:
    """The list of a problem text (the digits after `list :`)."""
    _, sep, tail = problem.rpartition("list :")
    if not sep:
        raise ValueError(f"not a strategy-world problem (no 'list :'): {problem!r}")
    return [int(t) for t in tail.split()]


def families_named(names: Sequence[str] | str | None) -> list[Family]:
    """The families of a world: a list of family names (a name the default world has is its family, as
    written there; any other name the family of that name), a world's name ("v1", "v2", ...), or None
    (the default world)."""
    if names is None:
        return list(FAMILIES)
    if isinstance(names, str):
        if names not in WORLDS:
            raise ValueError(f"unknown world {names!r} (worlds: {', '.join(WORLDS)}; or a list of family names)")
        return list(WORLDS[names])
    default = {f.name: f for f in FAMILIES}
    return [default.get(n) or get_family(n) for n in names]
