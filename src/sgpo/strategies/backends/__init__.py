"""Extraction backends: each is an `Extractor` (see `sgpo.strategies.registry` for selecting one by name)."""
