"""The selection step of top-N: each row's n best scores, fast, in pure NumPy.

A full partial sort of every user's 50k scores costs several times the matrix product itself.
Instead the columns of each user's scores are dealt into ``CHUNK``-sized chunks, the chunk
maxima are taken, and only the ``k`` chunks with the largest maxima are searched: each of the
true top-k items lies in one of them (a chunk holding a top-k item has a maximum at least that
item's score, and at most k-1 other chunks can beat it). Chunks are strided (chunk c holds
columns c, c + C, c + 2C, ... for C chunks), so their maxima are an element-wise maximum over
contiguous rows of memory, which NumPy vectorises, rather than many short reductions.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
from threadpoolctl import threadpool_limits

# Columns per chunk in the two-stage selection; rows scored per matrix product. The selection
# reads the scores the product just wrote, so a smaller block reads more of them from cache:
# 256 rows beat 512 at every shape measured (docs/benchmarks.md, top-N), and the score buffer
# is half the size.
CHUNK = 64

ROWS_PER_PRODUCT = 256


def _direct_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def _chunked_top_k(scores: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Columns of each row's k best scores (unordered); ``scores.shape[1]`` is a multiple of ``chunk``.

    Chunk c holds columns c + j * chunks for j < ``chunk`` (strided, see the module docstring).
    """
    rows, cols = scores.shape
    chunks = cols // chunk
    best_chunks = _direct_top_k(scores.reshape(rows, chunk, chunks).max(axis=1), k)
    candidates = (best_chunks[:, :, None] + chunks * np.arange(chunk)[None, None, :]).reshape(rows, k * chunk)
    # A flat gather: take_along_axis spent a third more on the same 640 cells per row.
    flat = np.ravel(scores)[candidates + (cols * np.arange(rows))[:, None]]
    within = _direct_top_k(flat, k)
    return np.take_along_axis(candidates, within, axis=1)


def top_n_scores(scores: np.ndarray, n: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and scores of each row's n best finite scores, best first (-inf = excluded).

    Rows with fewer than n finite scores have their missing slots at -inf; callers drop them.
    The two-stage path is used when the row is long enough for it to pay (and its width is a
    multiple of ``chunk``; ``recommend_top_n`` pads its item matrix so that it is).
    """
    k = min(n, scores.shape[1])
    if k == 0:
        return np.empty((scores.shape[0], 0), dtype=np.int64), np.empty((scores.shape[0], 0))
    if scores.shape[1] % chunk == 0 and scores.shape[1] >= 4 * k * chunk:
        part = _chunked_top_k(scores, k, chunk)
    else:
        part = _direct_top_k(scores, k)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def selection_width(items: int, n: int) -> int:
    """Columns of the score matrix for ``items`` items: padded to a multiple of ``CHUNK`` where
    the two-stage selection pays (the padding scores -inf), else the items alone; a width the
    chunks do not divide would fall back to a full partial sort."""
    return -(-items // CHUNK) * CHUNK if items >= 4 * n * CHUNK else items


def single_threaded_blas() -> AbstractContextManager[object]:
    """Spark runs one task per core: a multithreaded BLAS in every task only oversubscribes them."""
    return threadpool_limits(limits=1, user_api="blas")
