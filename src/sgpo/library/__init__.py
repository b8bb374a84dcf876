"""The strategy library: distinct strategies from extraction outputs, searched by problem similarity.

- `format`      `StrategyLibrary` (`build`, `save`, `load`, `retrieve`), the on-disk format (schema 1)
- `build`       extraction outputs → entries, near-duplicate strategies merged (`BuildConfig`)
- `retrieve`    strategies for problems from the most similar library problems, leak-filtered,
                optionally re-ranked by what they do for a policy (`RetrievalConfig`, `RerankConfig`)
- `similarity`  TF-IDF cosine (scikit-learn) for merging and for retrieval

`sgpo library build` / `sgpo library retrieve` are the command line; docs/strategy-library.md
describes the format and the choices.
"""

from sgpo.library.build import BuildConfig, BuildSummary, build_library
from sgpo.library.format import SCHEMA, Entry, LibraryError, LibraryProblem, StrategyLibrary
from sgpo.library.retrieve import RerankConfig, RetrievalConfig, RetrievalResult, RetrievalSummary, retrieve, retrieve_file

__all__ = [
    "SCHEMA",
    "BuildConfig",
    "BuildSummary",
    "Entry",
    "LibraryError",
    "LibraryProblem",
    "RerankConfig",
    "RetrievalConfig",
    "RetrievalResult",
    "RetrievalSummary",
    "StrategyLibrary",
    "build_library",
    "retrieve",
    "retrieve_file",
]
