"""Versioned extraction prompts: what the extractor model is asked, and the JSON schema it answers with.

A prompt version is frozen once released: its text is part of the result-cache key and of every output
row's provenance, so changing the wording means adding a new version (`v2`), never editing `v1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sgpo.strategies.base import Strategy

DEFAULT_PROMPT_VERSION = "v1"


@dataclass(frozen=True)
class ExtractionPrompt:
    """A system message and a user-message template with `{problem}` and `{response}` slots."""

    version: str
    system: str
    user_template: str

    def messages(self, problem: str, response: str, answer: str | None = None) -> list[dict[str, str]]:
        """Chat messages for one item. Slots are filled with `str.replace`, so braces in the problem or
        the response (LaTeX, code) are kept verbatim. The gold answer is not shown to the extractor:
        the strategy must not depend on it (the leak filter checks it afterwards)."""
        user = self.user_template.replace("{problem}", problem.strip()).replace("{response}", response.strip())
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    @staticmethod
    def json_schema() -> dict[str, Any]:
        """The JSON schema of the answer (for endpoints with structured-output / guided decoding)."""
        return Strategy.model_json_schema()


_V1_SYSTEM = (
    "You turn worked solutions into reusable problem-solving strategies. You answer with a single JSON object and nothing else."
)

_V1_USER = """Below are a problem and a worked solution of it. Describe the strategy the solution uses, so that it can guide someone solving similar problems.

Rules:
- Be abstract: describe the method, not this instance. Do not copy the problem's numbers, do not compute intermediate values, and never state the final answer.
- "approach": one sentence naming the kind of method.
- "key_insight": the observation that makes the method work.
- "steps": two to eight short, ordered, abstract steps.
- "pitfalls": optional list of mistakes to avoid.

Answer with a JSON object of exactly this form and nothing else:
{"approach": "...", "key_insight": "...", "steps": ["...", "..."], "pitfalls": ["..."]}

Problem:
{problem}

Solution:
{response}"""

PROMPTS: dict[str, ExtractionPrompt] = {
    "v1": ExtractionPrompt(version="v1", system=_V1_SYSTEM, user_template=_V1_USER),
}


def get_prompt(version: str = DEFAULT_PROMPT_VERSION) -> ExtractionPrompt:
    """The extraction prompt of a version; a clear error lists the known versions."""
    try:
        return PROMPTS[version]
    except KeyError:
        raise ValueError(f"unknown extraction prompt version {version!r} (known: {', '.join(PROMPTS)})") from None
