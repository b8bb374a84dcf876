"""Text similarity for the strategy library: TF-IDF vectors and their cosine, from scikit-learn.

Why TF-IDF cosine (scikit-learn's `TfidfVectorizer`) and not BM25 or embeddings: the cosine of two
L2-normalised TF-IDF vectors lies in [0, 1] whatever the corpus size, so one threshold
(`min_similarity`, `merge_threshold`) means the same on a library of 6 entries and of 46k; it needs
no model and no download, is exact and deterministic, and scikit-learn is maintained and already
wheels-only on every platform. BM25 scores are unbounded and grow with the corpus, which makes a
threshold meaningless; embeddings need a model per run. The vectorizer settings are written into the
library manifest (`VECTORIZER`), so anyone can rebuild the same vectors with scikit-learn alone.

Words are lower-cased runs of word characters, single digits and letters included (`3`, `x`): the same
text scores 1.0 and wins over texts that differ from it in their numbers only (`what is 0 plus 1` and
`What is 7 plus 4?` are close, not equal), while the IDF weight keeps numbers that many problems share
from counting much. (Libraries built before this kept scikit-learn's default pattern, which drops
one-character words; each library is read with the settings its manifest names.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: `TfidfVectorizer` keyword arguments; stored in the manifest (part of the library format)
VECTORIZER: dict[str, Any] = {
    "lowercase": True,
    "ngram_range": [1, 2],
    "sublinear_tf": True,
    "norm": "l2",
    "token_pattern": r"(?u)\b\w+\b",
}


def fit_vectorizer(corpus: Sequence[str], settings: dict[str, Any] | None = None):
    """A `TfidfVectorizer` fitted on `corpus` (vocabulary and IDF weights)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    kwargs = dict(settings or VECTORIZER)
    kwargs["ngram_range"] = tuple(kwargs["ngram_range"])
    vectorizer = TfidfVectorizer(**kwargs)
    try:
        vectorizer.fit(list(corpus))
    except ValueError:  # every text is empty of words: an empty vocabulary
        vectorizer = TfidfVectorizer(**{**kwargs, "token_pattern": r"(?u)\S+"})
        vectorizer.fit([t if t.strip() else "_" for t in corpus])
    return vectorizer


def cosine_blocks(queries, keys, block: int = 1024) -> Iterator[tuple[int, np.ndarray]]:
    """`(start, S)` for row blocks of the query matrix: `S[i, j]` = cosine of query `start + i` and key
    `j`, a dense float array of shape [min(block, n_queries - start), n_keys]. Rows of both sparse
    matrices are L2-normalised (or zero), so the dot product is the cosine. Blocking keeps the memory
    at `block x n_keys` floats."""
    keys_t = keys.T.tocsr()
    for start in range(0, queries.shape[0], block):
        part = queries[start : start + block] @ keys_t
        yield start, np.asarray(part.todense(), dtype=np.float64)


def leader_clusters(texts: Sequence[str], threshold: float, block: int = 1024) -> list[int]:
    """Greedy leader clustering of distinct texts by TF-IDF cosine.

    Texts are visited in order; a text joins the first earlier cluster whose leader (its first text)
    it resembles at cosine >= `threshold`, else it leads a new cluster. Every member is therefore
    within `threshold` of its leader (no chaining, unlike single linkage). Returns the cluster
    number of each text, clusters numbered in order of their leaders. `threshold > 1` merges nothing.
    """
    if not texts:
        return []
    vectors = fit_vectorizer(texts).transform(list(texts))
    cluster_of: list[int] = []
    leaders: list[int] = []
    for start, sims in cosine_blocks(vectors, vectors, block):
        for i in range(sims.shape[0]):
            row = start + i
            chosen = -1
            if leaders:
                lead_sims = sims[i, leaders]
                hits = np.nonzero(lead_sims >= threshold - 1e-12)[0]
                if hits.size:
                    chosen = int(hits[0])
            if chosen < 0:
                chosen = len(leaders)
                leaders.append(row)
            cluster_of.append(chosen)
    return cluster_of
