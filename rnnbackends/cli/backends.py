"""``backends``: every installed backend, its availability, and the one selected now."""
from __future__ import annotations

from .. import registry


def add_backends_command(sub):
    """Add ``backends`` to the CLI's sub-parsers."""
    p = sub.add_parser("backends", help="list installed backends, their availability and the one selected")
    p.set_defaults(func=cmd_backends)


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
