"""The ``rnnbackends`` command line: backends, train, evaluate, predict, generate, translate, export, data."""
from __future__ import annotations

import importlib.util
import logging
import sys

from .. import registry
from .backends import add_backends_command
from .common import Parser
from .export import add_export_command
from .predict import add_predict_commands
from .train import add_train_commands


def build_parser() -> Parser:
    """The argument parser with every sub-command."""
    parser = Parser(prog="rnnbackends", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log backend selection and progress")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_backends_command(sub)
    add_train_commands(sub)
    add_predict_commands(sub)
    add_export_command(sub)
    if importlib.util.find_spec(f"{__name__}.data") is not None:
        from .data import add_data_commands
        add_data_commands(sub)
    return parser


def interrupted_message(args):
    """What to do after Ctrl-C: resume a saved run, or save the next one."""
    if getattr(args, "command", None) != "train":
        return "rnnbackends: interrupted"
    if getattr(args, "save", None) is not None:
        return (f"rnnbackends: interrupted; the same command with --resume continues from the last finished epoch "
                f"saved in {args.save}")
    return "rnnbackends: interrupted; nothing was saved (train with --save DIR to be able to --resume)"


def main(argv=None) -> int:
    """Entry point of the ``rnnbackends`` console script; returns the exit status (2 for bad input)."""
    args = None
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
        return args.func(args)
    except SystemExit as exc:                                      # argparse: --help (0) or a bad argument (2)
        return exc.code if isinstance(exc.code, int) else 2
    except (registry.BackendError, OSError, ValueError) as exc:
        print(f"rnnbackends: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_message(args), file=sys.stderr)
        return 130
