"""The report's 2-D map of sampled vectors: PCA (NumPy's SVD), or UMAP when umap-learn is installed."""

from __future__ import annotations

import importlib.util

import numpy as np

from pipelines.report.errors import ReportError

SEED = 0


def check_method(method: str) -> None:
    """Raises ReportError when `method` cannot run here (UMAP without umap-learn)."""
    if method == "umap" and importlib.util.find_spec("umap") is None:
        raise ReportError(
            "--map umap needs the umap-learn package, which is not installed here; install it "
            "(pip install umap-learn) or use --map pca (the default)."
        )


def project(vectors: np.ndarray, method: str = "pca") -> np.ndarray:
    """The `[n, 2]` coordinates of `vectors` (`[n, d]`): their first two principal components, or UMAP's layout.

    Rows are scaled to unit length first (the report compares vectors by cosine). The result does not depend
    on the rows' order beyond their own values: PCA's signs are fixed by each component's largest loading.
    """
    check_method(method)
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    unit = unit_rows(vectors)
    if method == "umap":
        import umap  # optional and heavy: imported only when asked for

        reducer = umap.UMAP(n_components=2, metric="cosine", random_state=SEED, n_neighbors=min(15, max(n - 1, 2)))
        return np.asarray(reducer.fit_transform(unit), np.float32)
    centred = (unit - unit.mean(axis=0)).astype(np.float64)
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)  # ascending: the last two are the principal axes
    components = eigenvectors[:, ::-1][:, :2].T
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    coords = centred @ (components * signs[:, None]).T
    if coords.shape[1] < 2:  # one dimension, or one row: the second axis is flat
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords.astype(np.float32)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """`vectors` scaled to unit length (zero rows stay zero; non-finite values become zero)."""
    clean = np.asarray(vectors, np.float32)
    if not np.isfinite(clean).all():
        clean = np.nan_to_num(clean, nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.sqrt(np.einsum("ij,ij->i", clean, clean))[:, None]
    return clean / np.where(norms == 0, 1, norms)
