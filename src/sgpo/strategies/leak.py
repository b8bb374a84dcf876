"""The leak filter: a strategy must not give the answer away.

A strategy is rejected (with a reason, counted in the run summary) when it

- `leak_boxed`: contains a `\\boxed{}` / `\\fbox{}` (a stated final answer, whatever it is);
- `leak_gold_answer`: contains the gold answer;
- `leak_response_answer`: contains the final boxed answer of the strong-model response (which may
  differ from the gold answer, or be the only answer known);
- `leak_problem_numbers` (optional, `max_problem_numbers`): copies more than that many distinct numbers
  of the problem (an abstract strategy names no instance numbers).

"Contains" is math-aware, in three layers:

1. numbers: every numeric literal of the strategy (integers, decimals, `1,000`, `a/b`, `\\frac{a}{b}`,
   `\\dfrac12`, signed when the minus is unary) is compared *by exact rational value* with a numeric
   answer, so `1/2`, `\\frac{1}{2}`, `0.5` and `\\tfrac12` are one answer;
2. text: for a non-numeric answer, the answer with spaces and `$`, `\\left`, `\\right`, `\\dfrac`
   spellings normalised away, as a substring of the strategy normalised the same way (case-insensitive);
3. symbols: every math segment of the strategy (`$...$`, `\\(...\\)`, `\\[...\\]`, and the right-hand
   side of its last `=`) is compared with the answer by math-verify (`sgpo.verify.Verifier`, in a
   worker process with a timeout), so `$\\sqrt{12}$` matches `2\\sqrt{3}`.

Small integer answers (|value| <= `small_integer_limit`, default 1: "subtract 1" is method, not
answer) and one- or two-character non-numeric answers are only matched when the strategy states them
as an answer ("the answer is 1", "result: 1").
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass
from fractions import Fraction

from sgpo.answers import extract_boxed
from sgpo.strategies.base import Strategy, strategy_text
from sgpo.verify import Verifier

LEAK_REASONS = ("leak_boxed", "leak_gold_answer", "leak_response_answer", "leak_problem_numbers")


@dataclass(frozen=True)
class LeakConfig:
    """What the leak filter checks. Its `fingerprint` is stored with each result, so changing the
    configuration and rerunning re-filters cached strategies without asking the endpoint again."""

    check_gold_answer: bool = True
    check_response_answer: bool = True
    reject_boxed: bool = True
    #: reject strategies holding more than this many distinct numbers of the problem (None: off)
    max_problem_numbers: int | None = None
    #: numbers with |value| <= this are ignored by the problem-number check ("halve", "square")
    problem_number_ignore_limit: int = 2
    #: integer answers with |value| <= this only match when stated as an answer
    small_integer_limit: int = 1

    def fingerprint(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Leak:
    """Why a strategy was rejected."""

    reason: str
    detail: str


# ---------------------------------------------------------------------------------------------------
# numbers
_NUM = r"\d+(?:\.\d+)?"
_FRAC_RE = re.compile(
    r"\\[dt]?frac\s*(?:\{\s*(?P<n1>-?\s*" + _NUM + r")\s*\}|(?P<n2>\d))\s*(?:\{\s*(?P<d1>-?\s*" + _NUM + r")\s*\}|(?P<d2>\d))"
)
_SLASH_RE = re.compile(r"(?<![\w.,])(?P<n>" + _NUM + r")\s*/\s*(?P<d>" + _NUM + r")(?!\w|\.\d)")
_PLAIN_RE = re.compile(r"(?<![\w.])(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?![\d])")
_UNARY_BEFORE = set("([{=,:;<>$^") | {"\\"}


def _fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", "").replace(" ", ""))
    except (ValueError, ZeroDivisionError):
        return None


def _signed(text: str, start: int, value: Fraction) -> Fraction:
    """Apply a minus sign right before `start` when it is unary (not `x - 3`)."""
    j = start - 1
    while j >= 0 and text[j] == " ":
        j -= 1
    if j < 0 or text[j] not in "-\u2212":
        return value
    k = j - 1
    while k >= 0 and text[k] == " ":
        k -= 1
    if k < 0 or text[k] in _UNARY_BEFORE:
        return -value
    # a word before the minus ("is -3", "equals -3") makes it unary; a variable, digit or bracket binary
    m = re.search(r"[A-Za-z]+$", text[: k + 1])
    if m and len(m.group()) >= 2 and not text[: k + 1].endswith(("\\cdot", "\\times")):
        return -value
    return value


def numbers_in(text: str) -> list[Fraction]:
    """The numeric literals of `text`, as exact values, left to right within each notation.

    Grouped thousands (`1,200`) count both as the grouped value and as their parts, since `1,200`
    may also be a list."""
    values: list[Fraction] = []
    work = list(text)

    def blank(m: re.Match) -> None:
        for i in range(m.start(), m.end()):
            work[i] = " "

    for m in _FRAC_RE.finditer(text):
        n = _fraction(m.group("n1") or m.group("n2"))
        d = _fraction(m.group("d1") or m.group("d2"))
        if n is not None and d:
            values.append(_signed(text, m.start(), n / d))
        blank(m)
    masked = "".join(work)
    for m in _SLASH_RE.finditer(masked):
        n, d = _fraction(m.group("n")), _fraction(m.group("d"))
        if n is not None and d:
            values.append(_signed(masked, m.start(), n / d))
        # the parts are literals too ("3/4 of the 3 apples")
    for m in _PLAIN_RE.finditer(masked):
        raw = m.group("num")
        value = _fraction(raw)
        if value is None:
            continue
        values.append(_signed(masked, m.start(), value))
        if "," in raw:
            values += [Fraction(p) for p in raw.split(".")[0].split(",")]
    return values


_ANSWER_WRAPPERS = ("\\%", "%", "^\\circ", "^{\\circ}", "\u00b0")


def parse_number(answer: str) -> Fraction | None:
    """The exact value of an answer written as one number (`-3`, `1,000`, `0.5`, `1/2`, `\\frac{1}{2}`,
    `-\\dfrac12`, `$\\frac{-1}{2}$`, `50\\%`), or None when it is not a single number."""
    text = _squash(answer)
    if text.startswith("\\text{") and text.endswith("}"):
        text = text[6:-1]
    for suffix in _ANSWER_WRAPPERS:
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    text = text.rstrip(".")
    sign = Fraction(1)
    if text.startswith(("-", "\u2212")):
        sign, text = Fraction(-1), text[1:]
    elif text.startswith("+"):
        text = text[1:]
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+", text):
        return sign * Fraction(text.replace(",", ""))
    m = re.fullmatch(r"(-?" + _NUM + r")/(-?" + _NUM + r")", text)
    if m:
        n, d = Fraction(m.group(1)), Fraction(m.group(2))
        return sign * n / d if d else None
    m = _FRAC_RE.fullmatch(text)
    if m:
        n = _fraction(m.group("n1") or m.group("n2"))
        d = _fraction(m.group("d1") or m.group("d2"))
        if n is not None and d:
            return sign * n / d
    return None


# ---------------------------------------------------------------------------------------------------
# text and math segments
_SQUASH_TOKENS = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "$")


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def _squash(text: str) -> str:
    """Spaces and presentational LaTeX removed (`\\text{..}` unwrapped), `\\dfrac`/`\\tfrac` spelled
    `\\frac`, unicode minus as `-`."""
    text = _TEXT_WRAPPER.sub(r"\1", text)
    for tok in _SQUASH_TOKENS:
        text = text.replace(tok, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\u2212", "-")
    return re.sub(r"\s+", "", text)


_MATH_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_STATED_RE = re.compile(
    r"(?:final answer|answer|result|solution)[ \t]*(?:is|=|:|equals|would be|will be|of)?[ \t]*:?[ \t]*\$?[ \t]*"
    r"(?P<ans>-?[ \t]*(?:[^\s$.,;]|\.(?=\d)|,(?=\d{3}\b))+)",
    re.IGNORECASE,
)


def math_segments(text: str) -> list[str]:
    """The math segments of `text`, plus the right-hand side of the last `=` of each."""
    out: list[str] = []
    for m in _MATH_RE.finditer(text):
        seg = next(g for g in m.groups() if g is not None).strip()
        if not seg:
            continue
        out.append(seg)
        if "=" in seg:
            rhs = seg.rsplit("=", 1)[1].strip()
            if rhs:
                out.append(rhs)
    return out


def stated_answers(text: str) -> list[str]:
    """What the text states as an answer ("the answer is 7", "result: $x+1$")."""
    return [m.group("ans").strip() for m in _STATED_RE.finditer(text)]


# ---------------------------------------------------------------------------------------------------
class LeakFilter:
    """Checks strategies against the gold answer, the response's final answer and the problem.

    Thread-safe. The math-verify comparisons run in a `sgpo.verify.Verifier` worker process, created
    on first need; call `close()` at the end (or use as a context manager)."""

    def __init__(self, config: LeakConfig | None = None, verifier=None):
        self.config = config or LeakConfig()
        self._verifier = verifier
        self._owns_verifier = verifier is None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    def _get_verifier(self):
        with self._lock:
            if self._verifier is None:
                self._verifier = Verifier(num_workers=1, timeout=5.0)
            return self._verifier

    def close(self) -> None:
        if self._owns_verifier and self._verifier is not None:
            self._verifier.close()
            self._verifier = None

    def __enter__(self) -> LeakFilter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- checks ------------------------------------------------------------------------------------
    def contains_answer(self, text: str, answer: str) -> str | None:
        """The piece of `text` that gives `answer` away (for the rejection detail), or None."""
        answer = answer.strip()
        if not answer or not text.strip():
            return None
        cfg = self.config
        value = parse_number(answer)
        stated = stated_answers(text)
        if value is not None:
            for s in stated:
                if parse_number(s) == value:
                    return f"states the answer {s!r}"
            if value.denominator == 1 and abs(value) <= cfg.small_integer_limit:
                return None
            for w in numbers_in(text):
                if w == value:
                    return f"the number {_show(w)}"
        else:
            sq_answer = _squash(answer).lower()
            sq_text = _squash(text).lower()
            if len(sq_answer) <= 2:
                for s in stated:
                    if _squash(s).lower() == sq_answer:
                        return f"states the answer {s!r}"
                return None
            if sq_answer in sq_text:
                return f"the text {answer!r}"
        candidates = math_segments(text)
        if not candidates:
            return None
        checks = self._get_verifier().check_answers(candidates, [answer] * len(candidates))
        for cand, check in zip(candidates, checks):
            if check.correct:
                return f"the expression {cand!r}"
        return None

    def check(self, strategy: Strategy, problem: str, response: str | None = None, answer: str | None = None) -> Leak | None:
        """The first leak found (in the order of `LEAK_REASONS`), or None when the strategy is clean."""
        cfg = self.config
        text = strategy_text(strategy)
        if cfg.reject_boxed and ("\\boxed" in text or "\\fbox" in text):
            return Leak("leak_boxed", "the strategy contains a \\boxed{} answer")
        if cfg.check_gold_answer and answer is not None and str(answer).strip():
            hit = self.contains_answer(text, str(answer))
            if hit:
                return Leak("leak_gold_answer", f"{hit} equals the gold answer {str(answer)!r}")
        if cfg.check_response_answer and response:
            boxed = extract_boxed(response)
            if boxed and (answer is None or _squash(boxed) != _squash(str(answer))):
                hit = self.contains_answer(text, boxed)
                if hit:
                    return Leak("leak_response_answer", f"{hit} equals the response's final answer {boxed!r}")
        if cfg.max_problem_numbers is not None:
            limit = cfg.problem_number_ignore_limit
            in_problem = {v for v in numbers_in(problem) if abs(v) > limit}
            copied = sorted({v for v in numbers_in(text) if v in in_problem or -v in in_problem})
            if len(copied) > cfg.max_problem_numbers:
                shown = ", ".join(_show(v) for v in copied[:10])
                return Leak(
                    "leak_problem_numbers",
                    f"{len(copied)} of the problem's numbers ({shown}) > max_problem_numbers={cfg.max_problem_numbers}",
                )
        return None


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
