"""Under ``mpiexec -n N`` a test that fails on one rank ends the job (MPI Abort) with its report, instead of
leaving the other ranks waiting in that test's next collective."""
from __future__ import annotations

import sys

from rnnbackends import distributed


def pytest_runtest_logreport(report):
    """Abort every rank when this rank's test failed (only when launched by mpiexec with more than one rank)."""
    if report.failed and distributed.launched_by_mpiexec() is not None:
        comm = distributed.current()
        if comm.size > 1:
            print(f"\n{report.nodeid} failed on rank {comm.rank}:\n{report.longreprtext}", file=sys.stderr)
            sys.stderr.flush()
            comm.abort(1)
