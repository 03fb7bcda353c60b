"""`mpiexec -n K python -m perf run`: each rank times every K-th shape and rank 0 writes one merged result whose
rows are in grid order and name their host and device (a stand-in suite; one process under a plain pytest)."""
from __future__ import annotations

import argparse
import json
import types

from perf import runner
from tests.distributed.helpers import world

GRID = [("latency", h, b, 50) for h in (64, 128, 256) for b in (1, 4)] + [("big", 512, 64, 50)]   # (group, H, B, T)


def fake_suite(comm):
    """A suite module in the runner's protocol whose grid is GRID and whose 'device' is named after the rank."""
    suite = types.ModuleType("perf.fake")
    suite.shapes = lambda quick=False: list(GRID)

    def run_suite(args):
        rows = [{"group": g, "H": h, "B": b, "T": t, "impl": impl, "pass": "forward", "median_ms": ms,
                 "us_per_step": ms * 1e3 / t} for g, h, b, t in suite.shapes() for impl, ms in (("ours", 1.0),
                                                                                                ("torch", 2.0))]
        return {"suite": "fake", "machine": {"device": f"device-{comm.rank}"}, "rows": rows}
    suite.run_suite = run_suite
    return suite


def test_grid_spread_over_ranks_merges_on_rank_0(tmp_path):
    comm = world()
    out = comm.broadcast_object(str(tmp_path))
    paths = runner.run(fake_suite(comm), argparse.Namespace(out=out), ["run", "--suite", "fake"])
    if comm.rank != 0:
        assert paths == []
    comm.barrier()
    result = json.loads((tmp_path / "fake.json").read_text()) if comm.rank == 0 else None
    result = comm.broadcast_object(result)
    shapes = [(r["group"], r["H"], r["B"], r["T"]) for r in result["rows"]]
    assert shapes == [shape for shape in GRID for _ in range(2)]                  # every shape once, grid order
    if comm.size > 1:
        assert [r["rank"] for r in result["rows"][::2]] == [i % comm.size for i in range(len(GRID))]
        assert all(r["device"] == f"device-{r['rank']}" and r["host"] for r in result["rows"])
        assert [rank["device"] for rank in result["ranks"]] == [f"device-{r}" for r in range(comm.size)]
        text = (tmp_path / "fake.md").read_text() if comm.rank == 0 else ""
        assert comm.rank != 0 or "## Ranks" in text and "| 1 |" in text
