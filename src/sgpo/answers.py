"""Final-answer extraction from completions: the content of the last `\\boxed{...}` (or `\\fbox{...}`).

Bounded work on any input: finding the last box is a linear scan done in C (`str.rfind`), and reading
its content looks at no more than `MAX_ANSWER_CHARS` characters past it, so megabytes of model output,
deeply nested braces and unbalanced braces all cost microseconds.
"""

from __future__ import annotations

_BOX_COMMANDS = ("\\boxed", "\\fbox")
MAX_ANSWER_CHARS = 2000  # longer "answers" are garbage; refusing them keeps the verifier fast


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` in `text` with balanced braces, or None.

    `\\boxed 5` (no braces, single token) is accepted too. Unbalanced braces, and answers longer than
    `MAX_ANSWER_CHARS`, give None.
    """
    if not text:
        return None
    start = -1
    cmd_len = 0
    for cmd in _BOX_COMMANDS:
        pos = text.rfind(cmd)
        if pos > start:
            start, cmd_len = pos, len(cmd)
    if start < 0:
        return None
    i = start + cmd_len
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return None
    # nothing past this point can be part of an answer we accept
    limit = min(n, i + MAX_ANSWER_CHARS + 2)
    if text[i] != "{":
        # "\boxed 5" form: up to the next whitespace or "$"
        j = i
        while j < limit and not text[j].isspace() and text[j] != "$":
            j += 1
        if j - i > MAX_ANSWER_CHARS:
            return None
        ans = text[i:j].strip()
        return ans or None
    depth = 0
    for j in range(i, limit):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                ans = text[i + 1 : j].strip()
                if len(ans) > MAX_ANSWER_CHARS:
                    return None
                return ans
    return None
