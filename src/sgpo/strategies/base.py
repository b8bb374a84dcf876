"""The strategy schema (version 1) and the `Extractor` interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel, Field


class Strategy(BaseModel):
    """A strategy, schema version 1: abstract, no instance numbers, never the final answer."""

    approach: str = Field(description="the kind of method that solves the problem, in one sentence")
    key_insight: str = Field(description="the observation that makes the method work")
    steps: list[str] = Field(description="the procedure, as abstract ordered steps")
    pitfalls: list[str] = Field(default_factory=list, description="mistakes to avoid")


def render_strategy(strategy: Strategy) -> str:
    """The text block that goes into the guided prompt's `{strategy}` slot."""
    lines = [f"Approach: {strategy.approach}", f"Key insight: {strategy.key_insight}", "Steps:"]
    lines += [f"{i}. {step}" for i, step in enumerate(strategy.steps, start=1)]
    if strategy.pitfalls:
        lines.append("Pitfalls:")
        lines += [f"- {p}" for p in strategy.pitfalls]
    return "\n".join(lines)


class ExtractionError(Exception):
    """One item could not be turned into a strategy; `reason` is a short machine-readable label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Extractor(ABC):
    """Turns one strong-model response into a `Strategy` (raises `ExtractionError`)."""

    #: recorded in the output's provenance columns
    name: str = "extractor"

    @abstractmethod
    def extract(self, problem: str, response: str, answer: str | None = None) -> Strategy: ...
