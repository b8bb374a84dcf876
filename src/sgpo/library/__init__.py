"""The strategy library: distinct strategies from extraction outputs, searched by problem similarity.

- `library`     `StrategyLibrary`: `build`, `save`, `load`, `retrieve`, `retrieve_file` (the way in)
- `build`       extraction outputs → entries, near-duplicate strategies merged (`BuildConfig`)
- `retrieve`    strategies for problems from the most similar library problems, leak-filtered,
                optionally re-ranked by what they do for a policy (`RetrievalConfig`, `RerankConfig`)
- `format`      the records (`Entry`, `LibraryProblem`) and the folder format (schema 1)
- `similarity`  TF-IDF cosine (scikit-learn) for merging and for retrieval

`sgpo library build` / `sgpo library retrieve` are the command line; docs/strategy-library.md
describes the format and the choices.
"""

from sgpo.library.build import BuildConfig, BuildSummary
from sgpo.library.format import SCHEMA, Entry, LibraryError, LibraryProblem
from sgpo.library.library import StrategyLibrary
from sgpo.library.retrieve import RerankConfig, RetrievalConfig, RetrievalResult, RetrievalSummary

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
]
