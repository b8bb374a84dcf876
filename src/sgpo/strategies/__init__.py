"""Strategies: the structured, reusable descriptions of *how* a problem is solved.

`base` (schema, interface) is imported eagerly; the heavier parts load on first use:
`extract_strategies` (the extraction run), `build_extractor` (backends by name or import path),
`LeakConfig` / `LeakFilter`, `score_strategies`.
"""

from importlib import import_module
from typing import Any

from sgpo.strategies.base import (
    ExtractionError,
    ExtractionRequest,
    Extractor,
    ExtractorConfigError,
    Strategy,
    render_strategy,
    strategy_text,
)

_LAZY = {
    "extract_strategies": "sgpo.strategies.extraction",
    "ExtractionConfig": "sgpo.strategies.extraction",
    "ExtractionSummary": "sgpo.strategies.extraction",
    "InputColumns": "sgpo.strategies.extraction",
    "build_extractor": "sgpo.strategies.registry",
    "register_backend": "sgpo.strategies.registry",
    "LeakConfig": "sgpo.strategies.leak",
    "LeakFilter": "sgpo.strategies.leak",
    "parse_strategy": "sgpo.strategies.parsing",
    "score_strategies": "sgpo.strategies.scoring",
    "ScoringConfig": "sgpo.strategies.scoring",
}

__all__ = [
    "ExtractionError",
    "ExtractionRequest",
    "Extractor",
    "ExtractorConfigError",
    "Strategy",
    "render_strategy",
    "strategy_text",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sgpo.strategies' has no attribute {name!r}")
