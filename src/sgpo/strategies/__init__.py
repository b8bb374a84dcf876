"""Strategies: the structured, reusable descriptions of *how* a problem is solved."""

from sgpo.strategies.base import ExtractionError, Extractor, Strategy, render_strategy

__all__ = ["ExtractionError", "Extractor", "Strategy", "render_strategy"]
