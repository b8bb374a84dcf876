"""`StrategyLibrary`: distinct strategies and the problems they came from, in memory.

The one way in to the library: `StrategyLibrary.build` (from extraction outputs: `sgpo.library.build`),
`save` / `load` (the folder format: `sgpo.library.format`), `retrieve` and `retrieve_file`
(strategies for problems: `sgpo.library.retrieve`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import write_rows
from sgpo.library.build import BuildConfig, BuildSummary, build_entries
from sgpo.library.format import Entry, LibraryProblem, read_library, write_library
from sgpo.library.retrieve import RerankConfig, RetrievalConfig, RetrievalResult, RetrievalSummary, retrieve_rows


@dataclass
class StrategyLibrary:
    """Distinct strategies (`entries`) and the problems they came from (`problems`, what retrieval
    searches), with the `manifest` that says how they were built."""

    entries: list[Entry]
    problems: list[LibraryProblem]
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_id = {e.id: e for e in self.entries}

    def entry(self, entry_id: str) -> Entry:
        return self._by_id[entry_id]

    @classmethod
    def build(cls, sources: Sequence[Any], config: BuildConfig | None = None) -> tuple[StrategyLibrary, BuildSummary]:
        """A library (not yet saved) from extraction outputs (paths, data sets or lists of dicts), and
        the build summary; see `sgpo.library.build`."""
        entries, problems, manifest, summary = build_entries(sources, config or BuildConfig())
        return cls(entries, problems, manifest), summary

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the library into `folder` (`sgpo.library.format.write_library`); an existing folder is
        replaced only with `overwrite`, and only when it is a library."""
        self.manifest = write_library(folder, self.entries, self.problems, self.manifest, overwrite)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> StrategyLibrary:
        """Read and check a library folder. Raises `LibraryError` (one line naming the file, line and
        field) for a folder that is not a library, has another schema, is empty or malformed."""
        return cls(*read_library(folder))

    def retrieve(self, problems: Any, config: RetrievalConfig | None = None, rerank: RerankConfig | None = None,
                 progress: bool = True) -> RetrievalResult:  # fmt: skip
        """Fill the `strategy` of `problems` (a file, data set or list of rows) from the library; see
        `sgpo.library.retrieve`."""
        return retrieve_rows(self.entries, self.problems, self.manifest, problems, config or RetrievalConfig(), rerank, progress)

    def retrieve_file(self, input: Any, output: str | os.PathLike, config: RetrievalConfig | None = None,
                      rerank: RerankConfig | None = None, progress: bool = True) -> RetrievalSummary:  # fmt: skip
        """`retrieve`, written to `output` (.jsonl / .json / .parquet)."""
        result = self.retrieve(input, config, rerank, progress)
        write_rows(output, result.rows)
        result.summary.output = str(output)
        return result.summary
