"""PCA over interest embeddings (the LSTM's hidden states), fitted on training embeddings only.

Pure scikit-learn/numpy; no side effects at import.

Public API::

    fit_pca(embeddings, variance=0.95, seed=0, max_components=None) -> (PCA, curve)
        ``curve``: {"explained_variance_ratio": [...], "cumulative": [...], "n_components": k}
        computed on a full PCA, so the plot shows where the threshold cut the curve.
    transform(pca, embeddings) -> ndarray[n, k]
    project_directions(pca, vectors) -> ndarray[k, m]
        vectors in the embedding space (e.g. the LSTM head's category vectors, ``[units, m]``)
        expressed in the same principal axes (no centring: they are directions, not points).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA


def fit_pca(
    embeddings: np.ndarray, variance: float = 0.95, seed: int = 0, max_components: int | None = None
) -> tuple[PCA, dict[str, Any]]:
    """The smallest number of components whose cumulative explained variance reaches ``variance``."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 embeddings of shape [n, d], got {x.shape}")
    full = PCA(svd_solver="full", random_state=seed).fit(x)
    ratio = full.explained_variance_ratio_
    cumulative = np.cumsum(ratio)
    k = int(np.searchsorted(cumulative, min(variance, cumulative[-1]) - 1e-12) + 1)
    if max_components:
        k = min(k, max_components)
    k = max(1, min(k, len(ratio)))
    pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(x)
    curve = {
        "explained_variance_ratio": [float(v) for v in ratio],
        "cumulative": [float(v) for v in cumulative],
        "n_components": k,
        "variance_target": float(variance),
    }
    return pca, curve


def transform(pca: PCA, embeddings: np.ndarray) -> np.ndarray:
    return pca.transform(np.asarray(embeddings, dtype=np.float64))


def project_directions(pca: PCA, vectors: np.ndarray) -> np.ndarray:
    """``components_ @ vectors``: each column of ``vectors`` ([d, m]) on the ``k`` principal axes."""
    return pca.components_ @ np.asarray(vectors, dtype=np.float64)
