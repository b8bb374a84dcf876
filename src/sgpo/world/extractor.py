"""The strategy world's extractor: a rule-based reader of the oracle's worked solutions.

`WorldExtractor` implements the project's `Extractor` interface, so the demo runs responses →
strategies → training exactly like a run with an LLM extractor. It parses a response

    method : <method phrase> . [target : <t> .] <x><n><v> <x><n><v> ... . answer : \\boxed{<answer>}

(`<n>` one of the family's step notations, `>` `=` `:` ...; between two steps one of the family's
separators, a space or, in world v2.4, `,` `;`)

checks it (a known method, a trace over the problem's own list that follows that method's update
rule, a boxed answer equal to the last running value and to the gold answer when one is given) and
writes the structured `Strategy` of the method from its lexicon: abstract sentences with no digit in
them, so a strategy can neither hold an instance number nor the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sgpo.strategies.base import ExtractionError, Extractor, Strategy, render_strategy
from sgpo.world.families import FAMILY_BY_METHOD, Instance, parse_numbers

_RESPONSE = re.compile(
    r"^\s*method : (?P<method>[a-z ]+?) \. (?:target : (?P<target>\d+) \. )?(?P<trace>.+?) \. answer : \\boxed\{(?P<answer>-?\d+)\}\s*$",
    re.S,
)
_STEP = re.compile(r"^(?P<x>\d+)(?P<n>[>=:~|/])(?P<v>-?\d+)$")  # every notation of any world (families.py)
_SEPARATOR = re.compile(r"([ ,;])")  # every step separator of any world (families.py)
_DIGIT = re.compile(r"\d")


def _question_target(problem: str) -> int | None:
    question = problem.rpartition("list :")[0]
    digits = [int(t) for t in question.split() if t.isdigit()]
    return digits[0] if len(digits) == 1 else None


class WorldExtractor(Extractor):
    """Parses a strategy-world worked solution into its `Strategy` (raises `ExtractionError`)."""

    name = "world-rules"

    def extract(self, problem: str, response: str, answer: str | None = None) -> Strategy:
        m = _RESPONSE.match(response or "")
        if m is None:
            raise ExtractionError("unparsable", f"not a 'method : ... answer : \\boxed{{}}' solution: {response!r:.120}")
        method = m["method"]
        family = FAMILY_BY_METHOD.get(method)
        if family is None:
            raise ExtractionError("unknown_method", f"{method!r} (known: {', '.join(FAMILY_BY_METHOD)})")
        pairs = []
        steps = _SEPARATOR.split(m["trace"])  # step, separator, step, ...
        bad_separator = next((sep for sep in steps[1::2] if sep not in family.separators), None)
        if bad_separator is not None:
            raise ExtractionError("unparsable", f"steps separated by {bad_separator!r}, not by one of {list(family.separators)}")
        for step in steps[0::2]:
            s = _STEP.match(step)
            if s is None or s["n"] not in family.notations:
                raise ExtractionError("unparsable", f"trace step {step!r} is not '<number>{'|'.join(family.notations)}<value>'")
            pairs.append((int(s["x"]), int(s["v"])))
        try:
            numbers = parse_numbers(problem)
        except ValueError as exc:
            raise ExtractionError("unparsable", str(exc)) from None
        if [x for x, _ in pairs] != numbers:
            raise ExtractionError("inconsistent_trace", "the trace does not walk through the problem's list")
        target = _question_target(problem) if family.has_target else None
        if family.has_target and (target is None or m["target"] is None or int(m["target"]) != target):
            raise ExtractionError(
                "inconsistent_trace", f"method {method!r} needs the question's target number, restated before the trace"
            )
        if not family.has_target and m["target"] is not None:
            raise ExtractionError("inconsistent_trace", f"method {method!r} has no target")
        if family.trace(Instance(tuple(numbers), target)) != [v for _, v in pairs]:
            raise ExtractionError("inconsistent_trace", f"the running values do not follow the {method!r} rule")
        boxed = m["answer"]
        if int(boxed) != pairs[-1][1]:
            raise ExtractionError("inconsistent_answer", "the boxed answer is not the last running value")
        if answer is not None and boxed != str(answer).strip():
            raise ExtractionError("wrong_answer", f"boxed {boxed!r}, gold {answer!r}")
        strategy = Strategy(
            approach=family.approach,
            key_insight=family.insight,
            steps=[family.start_rule, family.update_rule],
            pitfalls=[family.pitfall] if family.pitfall else [],
        )
        leaked = [f for f in (strategy.approach, strategy.key_insight, *strategy.steps, *strategy.pitfalls) if _DIGIT.search(f)]
        if leaked:  # the lexicon is number-free; this guards edits to it
            raise ExtractionError("leaks_numbers", f"strategy text holds a number: {leaked[0]!r}")
        return strategy


def fill_strategies(rows: Iterable[Mapping[str, Any]], extractor: Extractor | None = None) -> list[dict[str, Any]]:
    """Copies of `rows` with `strategy` set to the rendered strategy extracted from each `response`.

    Raises `ExtractionError` naming the row id when a response cannot be read.
    (The demo pipeline goes through `sgpo.strategies.extraction.extract_strategies` instead, which adds
    the schema check, leak filter and cache; this is the in-memory shortcut.)
    """
    extractor = extractor or WorldExtractor()
    out = []
    for i, row in enumerate(rows):
        try:
            strategy = extractor.extract(row["problem"], row["response"], row.get("answer"))
        except ExtractionError as exc:
            raise ExtractionError(exc.reason, f"row {i} (id {row.get('id')!r}): {exc.detail}") from None
        out.append({**row, "strategy": render_strategy(strategy)})
    return out
