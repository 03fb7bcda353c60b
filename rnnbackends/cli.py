"""The ``rnnbackends`` command line."""
from __future__ import annotations

import argparse
import logging
import sys

from . import registry
from .commands import add_commands
from .seqcommands import add_sequence_commands


def cmd_backends(args) -> int:
    """Print every backend: version, distribution, device, priority, availability, capabilities."""
    rows = registry.list_backends()
    header = ("name", "status", "priority", "device", "distribution", "capabilities")
    table = [header]
    for r in rows:
        dist = f"{r.distribution} {r.version}".strip() or "-"
        if r.spec is None:
            table.append((r.name, r.status, "-", "-", dist, "-"))
        else:
            caps = ",".join(sorted(r.capabilities)) or "-"
            table.append((r.name, r.status, str(r.spec.priority), r.spec.device, dist, caps))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print()
    for r in rows:
        print(f"{r.name}: {r.reason}")
    print()
    try:
        name, why = registry.selected_backend_name()
        print(f"selected now: {name} ({why})")
    except registry.BackendError as exc:
        print(f"selected now: none: {exc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="rnnbackends", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log backend selection and progress")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backends", help="list installed backends, their availability and the one selected")
    p.set_defaults(func=cmd_backends)
    add_commands(sub)
    add_sequence_commands(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``rnnbackends`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (registry.BackendError, OSError, ValueError) as exc:
        print(f"rnnbackends: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnbackends: interrupted; a run saved with --save DIR continues from its last finished epoch with "
              "--resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
