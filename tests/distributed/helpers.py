"""Shared pieces of the distributed tests: the world, small data sets, and whether mpiexec can run here."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest

from rnnbackends import distributed
from rnnbackends.data import Batch

MPI_MISSING = importlib.util.find_spec("mpi4py") is None
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
needs_mpiexec = pytest.mark.skipif(MPI_MISSING or MPIEXEC is None,
                                   reason="needs mpi4py and mpiexec: pip install 'rnnbackends[mpi]'")
outside_mpiexec = pytest.mark.skipif(distributed.launched_by_mpiexec() is not None,
                                     reason="launches its own mpiexec: runs under a plain pytest")


def world():
    """This process's communicator: MPI under ``mpiexec -n N``, else one process."""
    return distributed.current()


def tagging_batches(seed, batches=4, rows=10, vocab=20, tags=5, max_length=9):
    """Padded time-major Batches ((ids (T, B), lengths (B,)), tags (T, B), mask (T, B)) of random sentences of
    very different lengths, so the ranks' blocks hold different numbers of loss entries."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        lengths = rng.integers(1, max_length + 1, rows)
        T = int(lengths.max())
        mask = np.arange(T)[:, None] < lengths[None, :]
        ids = np.where(mask, rng.integers(2, vocab, (T, rows)), 0)
        out.append(Batch((ids, lengths), np.where(mask, rng.integers(0, tags, (T, rows)), 0), mask))
    return out


def sentiment_batches(seed, batches=4, rows=10, vocab=20, max_length=7):
    """Padded Batches ((ids (T, B), lengths (B,)), labels (B,)) without a mask."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        lengths = rng.integers(1, max_length + 1, rows)
        T = int(lengths.max())
        ids = np.where(np.arange(T)[:, None] < lengths[None, :], rng.integers(2, vocab, (T, rows)), 0)
        out.append(Batch((ids, lengths), rng.integers(0, 2, rows)))
    return out
