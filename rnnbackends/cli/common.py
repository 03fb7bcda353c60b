"""What every sub-command shares: one-line argument errors, checked option types, ``--backend``, input lines, the
BLAS-thread policy and the note printed before Numba compiles its kernels."""
from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import math
import os
import sys
from pathlib import Path

from .. import registry


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on standard error and exit status 2."""

    def error(self, message):
        """Print ``rnnbackends: error: MESSAGE`` (no usage block) and exit with status 2."""
        print(f"rnnbackends: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def text(value):
    """A non-empty string (an empty one is a mistake, never 'use the default')."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def path(value):
    """A non-empty path."""
    return Path(text(value))


def integer(low):
    """An int type that is at least ``low``."""
    def parse(value):
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {number}")
        return number
    return parse


def real(low):
    """A finite float type that is at least ``low``."""
    def parse(value):
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        if not math.isfinite(number) or number < low:
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, got {value!r}")
        return number
    return parse


def add_backend_option(parser):
    """``--backend NAME``: a backend name or comma list, checked before any work."""
    parser.add_argument("--backend", type=text, metavar="NAME",
                        help="backend name or comma list (default: RNNBACKENDS_BACKEND, else the best available)")


def add_checkpoint_option(parser, written_by="'train --save'"):
    """``--checkpoint DIR``: a folder written by ``train --save``."""
    parser.add_argument("--checkpoint", required=True, type=path, metavar="DIR",
                        help=f"a folder written by {written_by}")


def add_input_argument(parser, what="input lines"):
    """The positional ``FILE|-`` of line-by-line commands."""
    parser.add_argument("input", nargs="?", default="-", type=text, metavar="FILE|-",
                        help=f"{what}, one per line (default '-': standard input)")


def check_input(source):
    """A ValueError unless ``source`` is ``-`` or a readable file."""
    if source != "-" and not Path(source).is_file():
        problem = "is a folder, not a file" if Path(source).exists() else "no such file"
        raise ValueError(f"{source}: {problem}")


def read_lines(source):
    """The non-blank lines of FILE or of standard input (``-``), without line endings."""
    check_input(source)
    try:
        if source == "-":
            content = sys.stdin.read()
        else:
            with open(source, encoding="utf-8", newline="") as f:
                content = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{'standard input' if source == '-' else source}: not UTF-8 text") from None
    return [line.rstrip("\r") for line in content.split("\n") if line.strip()]


def check_backend(name):
    """Resolve ``--backend`` (or the usual selection) now, so a bad name fails before any work; returns the name."""
    selected, _ = registry.selected_backend_name(name)
    registry.get_backend(selected)
    return selected


def numba_cache_is_cold():
    """Whether Numba has no cached kernels of the numba backend yet (its first run compiles them, ~10 s)."""
    spec = importlib.util.find_spec("rnnbackends_numba")
    if spec is None or not spec.submodule_search_locations:
        return False
    package = Path(next(iter(spec.submodule_search_locations)))
    patterns = [str(package / "__pycache__" / "*.nbi")]              # Numba's cache beside the sources, or else:
    for root in (os.environ.get("NUMBA_CACHE_DIR"), Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                 / "numba"):
        if root:
            patterns.append(str(Path(root) / "**" / "*rnnbackends_numba*" / "**" / "*.nbi"))
    return not any(glob.glob(pattern, recursive=True) for pattern in patterns)


def announce_compilation(backend_name):
    """One line on standard error before the numba backend compiles its kernels for the first time."""
    if backend_name == "numba" and numba_cache_is_cold():
        print("rnnbackends: compiling kernels (first run only)", file=sys.stderr)


@contextlib.contextmanager
def reading_checkpoint(directory):
    """Turn a missing entry of a checkpoint's meta (a KeyError inside a task) into a one-line error."""
    try:
        yield
    except KeyError as exc:
        raise ValueError(f"{directory}: an incomplete checkpoint (its meta has no {exc}); save it again with "
                         "'rnnbackends train ... --save DIR'") from None


def one_blas_thread():
    """Run BLAS on one thread unless the user set a thread count: an RNN's per-step products are small, and
    BLAS threads spinning on a small or shared machine made the sentiment run 4-5x slower on 2 cores."""
    if any(v in os.environ for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(1, user_api="blas")


def log_line(line):
    """A per-epoch log line on standard error (without breaking a progress bar)."""
    from ..training import log_to_stderr
    log_to_stderr(line)
