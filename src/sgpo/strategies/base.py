"""The strategy schema (version 1) and the `Extractor` interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def strategy_text(strategy: Strategy) -> str:
    """All the free text of a strategy (every field), one item per line: what the leak filter reads."""
    return "\n".join([strategy.approach, strategy.key_insight, *strategy.steps, *strategy.pitfalls])


class ExtractionError(Exception):
    """One item could not be turned into a strategy; `reason` is a short machine-readable label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ExtractorConfigError(RuntimeError):
    """The extractor cannot work at all (bad credentials, unknown model, missing package).

    Unlike `ExtractionError` (one item failed, recorded, the run goes on), this stops the run: every
    further item would fail the same way. Items already done stay in the result cache."""


@dataclass(frozen=True)
class ExtractionRequest:
    """One item to extract a strategy from."""

    problem: str
    response: str
    answer: str | None = None


class Extractor(ABC):
    """Turns one strong-model response into a `Strategy` (raises `ExtractionError`).

    Only `extract` is required. The optional attributes tell the pipeline how to drive a backend:
    `max_concurrency` (None: thread-safe and I/O bound, any concurrency; 1: one call at a time, e.g. an
    in-process model), `batch_size` (items per `extract_batch` call), and `model` / `prompt_version`,
    which are recorded in the output's provenance columns and are part of the result-cache key.
    """

    #: recorded in the output's provenance columns
    name: str = "extractor"
    #: the model behind the extractor (None for rule-based extractors)
    model: str | None = None
    #: version of the extraction prompt (None when no prompt is used)
    prompt_version: str | None = None
    #: the most concurrent calls the extractor supports (None: no limit)
    max_concurrency: int | None = None
    #: items per `extract_batch` call
    batch_size: int = 1

    @abstractmethod
    def extract(self, problem: str, response: str, answer: str | None = None) -> Strategy: ...

    def extract_batch(self, items: Sequence[ExtractionRequest]) -> list[Strategy | ExtractionError]:
        """One result per item, in order: a `Strategy`, or the `ExtractionError` that item raised.

        Backends that generate in batches (in-process models) override this; the default calls
        `extract` item by item."""
        out: list[Strategy | ExtractionError] = []
        for item in items:
            try:
                out.append(self.extract(item.problem, item.response, item.answer))
            except ExtractionError as exc:
                out.append(exc)
        return out

    def probe(self) -> None:
        """Called once before the first item of a run is sent: raise `ExtractorConfigError` when the
        extractor cannot work at all (e.g. nothing listens at its endpoint), so the run stops with one
        error instead of failing every item. The default checks nothing."""

    def provenance(self) -> dict[str, Any]:
        """The provenance columns of every output row this extractor produces."""
        return {"extractor": self.name, "extractor_model": self.model, "prompt_version": self.prompt_version}

    def close(self) -> None:
        """Release connections / models. Called once at the end of a run."""


class BatchExtractor(Extractor):
    """Base of backends that generate in batches (in-process models): implement `extract_batch`;
    `extract` runs a batch of one."""

    @abstractmethod
    def extract_batch(self, items: Sequence[ExtractionRequest]) -> list[Strategy | ExtractionError]: ...

    def extract(self, problem: str, response: str, answer: str | None = None) -> Strategy:
        (result,) = self.extract_batch([ExtractionRequest(problem, response, answer)])
        if isinstance(result, ExtractionError):
            raise result
        return result
