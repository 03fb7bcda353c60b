"""A perf grid over many ranks: ``mpiexec -n K python -m perf run --suite gpu|cpu`` gives each rank every K-th
shape of the suite's grid (its module-level ``shapes(...)``), each rank times its shapes on its own device (the
local rank's GPU), and rank 0 merges the rows, in grid order and each naming its host and device, into one result.
"""
from __future__ import annotations

import json
import platform

from perf import runner


def shape_key(shape):
    """(group, (H, B, T)) of a grid shape, whatever the suite's tuple order."""
    return next(v for v in shape if isinstance(v, str)), tuple(v for v in shape if not isinstance(v, str))


def row_key(row):
    """(group, (H, B, T)) of a result row."""
    return row["group"], (row["H"], row["B"], row["T"])


def share_grid(module, communicator):
    """Make ``module.shapes`` return this rank's share (every K-th shape from its rank); returns the whole grid's
    order {shape key: index}, filled when the suite first asks for its shapes."""
    order = {}
    if communicator.size == 1:
        return order
    whole = module.shapes

    def shapes(*args, **kwargs):
        """This rank's shapes of the suite's grid."""
        grid = whole(*args, **kwargs)
        order.update({shape_key(shape): index for index, shape in enumerate(grid)})
        return grid[communicator.rank::communicator.size]
    module.shapes = shapes
    return order


def where(result):
    """(host, device) of this rank's result: the GPU's name, or the CPU model."""
    device = result.get("machine", {}).get("device") or result.get("run", {}).get("cpu") or runner.cpu_model()
    return platform.node(), device


def merge(communicator, result, order):
    """On rank 0: every rank's rows in grid order, each naming its host and device, and ``ranks``, what each rank
    ran on; None on the other ranks."""
    host, device = where(result)
    for row in result["rows"]:
        row.update(host=host, device=device, rank=communicator.rank)
    mine = {"rank": communicator.rank, "host": host, "device": device, "machine": result.get("machine"),
            "wall_s": result["run"].get("wall_s")}
    results = communicator.gather_object(json.loads(json.dumps({**result, "mine": mine}, default=float)))
    if results is None:
        return None
    ranks = [part.pop("mine") for part in results]
    merged = results[0]
    rows = [row for part in results for row in part["rows"]]
    merged["rows"] = sorted(rows, key=lambda row: (order.get(row_key(row), len(order)), row["rank"]))
    merged["ranks"] = ranks
    merged.setdefault("machine", {})["device"] = ", ".join(sorted({rank["device"] for rank in merged["ranks"]}))
    merged["run"]["note"] += f"; {communicator.size} ranks, each timing its share of the grid on its own device"
    return merged


def ranks_markdown(result):
    """The Markdown section naming each rank's host and device and the shapes it timed."""
    lines = ["", "## Ranks", "", "| rank | host | device | shapes (H, B, T) | wall s |", "|---|---|---|---|---|"]
    for rank in result["ranks"]:
        shapes = sorted({(row["H"], row["B"], row["T"]) for row in result["rows"] if row.get("rank") == rank["rank"]})
        lines.append(f"| {rank['rank']} | {rank['host']} | {rank['device']} | "
                     f"{'; '.join(','.join(map(str, s)) for s in shapes)} | {rank['wall_s']} |")
    return "\n".join(lines) + "\n"
