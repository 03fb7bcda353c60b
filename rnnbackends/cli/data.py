"""``data``: the bundled task data, and full-size corpora fetched into a per-user cache (list, path, fetch)."""
from __future__ import annotations

import sys

from ..datasets import BUNDLED, remote


def add_data_commands(sub):
    """Add ``data list``, ``data path NAME`` and ``data fetch NAME`` to the CLI's sub-parsers."""
    data = sub.add_parser("data", help="bundled data and downloadable full-size corpora (list, path, fetch)")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every bundled dataset and downloadable corpus, and where it is")
    listing.set_defaults(func=cmd_list)
    where = actions.add_parser("path", help="print the path that 'train --data' takes for a fetched corpus")
    where.add_argument("name", choices=sorted(remote.CORPORA), metavar="NAME", help=", ".join(remote.CORPORA))
    where.set_defaults(func=cmd_path)
    fetch = actions.add_parser("fetch", help="download a corpus (pinned SHA-256) into the per-user cache")
    fetch.add_argument("name", choices=sorted(remote.CORPORA), metavar="NAME", help=", ".join(remote.CORPORA))
    fetch.add_argument("--no-progress", action="store_true", help="no download progress bar")
    fetch.set_defaults(func=cmd_fetch)
    from ..speech.cli import add_make_command  # data make speech: synthesise a corpus
    add_make_command(actions)


def cmd_list(args) -> int:
    """Print the bundled data of each task, then each downloadable corpus with its state."""
    print("bundled (used when 'train TASK' gets no --data):")
    for task, path in BUNDLED.items():
        print(f"  {task:12} {path}")
    print("downloadable ('rnnbackends data fetch NAME'):")
    for corpus in remote.CORPORA.values():
        try:
            state = f"fetched: {corpus.use} {remote.path(corpus.name)}"
        except ValueError:
            state = "not fetched"
        print(f"  {corpus.name:16} {corpus.description}\n  {'':16} licence: {corpus.licence}\n  {'':16} {state}")
    return 0


def cmd_path(args) -> int:
    """Print the fetched corpus's path (a file or folder for ``--data``)."""
    print(remote.path(args.name))
    return 0


def cmd_fetch(args) -> int:
    """Download the corpus (or check the copy already there) and print where it is."""
    corpus = remote.corpus(args.name)
    log = lambda line: print(line, file=sys.stderr)                     # noqa: E731
    target = remote.fetch(corpus.name, progress=not args.no_progress and sys.stderr.isatty(), log=log)
    print(f"{corpus.name}: {target}", file=sys.stderr)
    print(f"train on it: {corpus.use} {target}", file=sys.stderr)
    print(target)
    return 0
