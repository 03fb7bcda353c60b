"""Jobs launched with ``mpiexec -n 2``: a failing rank ends the whole job within seconds with its error (without
the abort it would hang in the next all-reduce), from the Python API and from the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.distributed.helpers import MPIEXEC, needs_mpiexec, outside_mpiexec

pytestmark = [needs_mpiexec, outside_mpiexec]
ROOT = Path(__file__).resolve().parents[2]


def launch(*command, timeout=120):
    """Run ``mpiexec -n 2 ...`` (or an MPMD command line); returns (completed process, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPIR_"))}
    env["OMP_NUM_THREADS"] = env["NUMBA_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])   # tests.* helpers
    started = time.perf_counter()
    done = subprocess.run([MPIEXEC, *command], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    return done, time.perf_counter() - started


def test_a_rank_that_raises_stops_the_job_within_seconds(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(textwrap.dedent("""
        from rnnbackends import distributed
        from rnnbackends.losses import binary_cross_entropy
        from rnnbackends.models import SequenceClassifier
        from rnnbackends.optimizers import Adam
        from rnnbackends.training import fit
        from tests.distributed.helpers import sentiment_batches

        comm = distributed.current()
        def loss(logits, targets, mask=None, steps=[0]):
            steps[0] += 1
            if comm.rank == 1 and steps[0] == 3:
                raise RuntimeError("rank 1 fails at its third step")
            return binary_cross_entropy(logits, targets, mask)
        model = SequenceClassifier(20, 2, embed_dim=4, hidden_size=5, backend="numpy", seed=0)
        fit(model, loss, Adam(0.01), lambda epoch: sentiment_batches(0), epochs=100, progress=False, log=None)
        print("finished")
        """))
    done, seconds = launch("-n", "2", sys.executable, str(script))
    assert "RuntimeError: rank 1 fails at its third step" in done.stderr
    assert done.returncode != 0 and "finished" not in done.stdout
    assert seconds < 30, f"the job took {seconds:.0f} s to stop"


def test_cli_rank_with_bad_input_stops_the_job_with_its_line(tmp_path):
    command = [sys.executable, "-m", "rnnbackends.cli", "train", "sentiment", "--epochs", "1", "--quiet"]
    done, seconds = launch("-n", "1", *command, ":", "-n", "1", *command, "--data", str(tmp_path / "missing"))
    assert done.returncode == 2, done.stderr
    assert "error on rank 1 of 2 (" in done.stderr and f"--data {tmp_path / 'missing'}: no such file" in done.stderr
    assert "Traceback" not in done.stderr
    assert seconds < 30, f"the job took {seconds:.0f} s to stop"
