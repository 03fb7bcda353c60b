"""The ``train`` and ``predict`` sub-commands of the ``rnnbackends`` CLI."""
from __future__ import annotations

import inspect
import contextlib
import json
import os
import sys
from pathlib import Path

from .files import write_atomically
from .tasks import TASKS, get_task


def add_commands(sub):
    """Add ``train`` and ``predict`` to the CLI's sub-parsers."""
    p = sub.add_parser("train", help="train a task on real data and report its metric against its baselines")
    p.add_argument("task", help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--data", metavar="PATH", help="the task's data (default: the copy bundled with the package)")
    p.add_argument("--backend", metavar="NAME", help="backend name or comma list (default: selected as usual)")
    p.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (default: the task's)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of weights and shuffling (default 0)")
    p.add_argument("--save", metavar="DIR", help="write a checkpoint (weights, config, vocabulary) to DIR")
    p.add_argument("--metrics-out", metavar="FILE.json", help="write {task, backend, metric, value, baseline, higher_is_better}")
    p.add_argument("--plot", metavar="FILE.png", help="save loss curves (and the forecast for time series)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch log")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last finished epoch in --save DIR (sequence tasks)")
    p.add_argument("--level", choices=("char", "word"), help="textgen: characters (default) or words")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("predict", help="predict with a saved checkpoint: one input per line in, one prediction per line out")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a directory written by 'train --save'")
    p.add_argument("input", nargs="?", default="-", metavar="FILE|-", help="input lines (default: standard input)")
    p.add_argument("--backend", metavar="NAME", help="backend name or comma list (default: selected as usual)")
    p.set_defaults(func=cmd_predict)


def one_blas_thread():
    """Run BLAS on one thread unless the user set a thread count: an RNN's per-step products are small, and
    BLAS threads spinning on a small or shared machine made the sentiment run 4-5x slower on 2 cores."""
    if any(v in os.environ for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(1, user_api="blas")


def cmd_train(args) -> int:
    """Train TASK, print the metric beside the baselines and a few example predictions; save, plot, write metrics."""
    with one_blas_thread():
        return train_task(args)


def train_task(args) -> int:
    """The body of ``train``."""
    task = get_task(args.task)
    if args.data is not None and not Path(args.data).exists():
        raise ValueError(f"--data {args.data}: no such file or folder")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")
    for option, path in (("--metrics-out", args.metrics_out), ("--plot", args.plot)):
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise ValueError(f"{option} {path}: the folder {Path(path).parent} does not exist")
    options = {name: value for name, value in (("resume", args.resume), ("level", args.level)) if value}
    unsupported = [name for name in options if name not in inspect.signature(task.train).parameters]
    if unsupported:
        raise ValueError(f"task {args.task} does not take --{unsupported[0]}")
    result = task.train(data=args.data, backend=args.backend, epochs=args.epochs, seed=args.seed, save=args.save,
                        progress=not args.quiet, log=None if args.quiet else _log, **options)
    better = "beats" if result.beats_baseline else "does NOT beat"
    print(f"{result.task} on backend {result.backend} in {result.seconds:.0f} s: "
          f"{result.metric} {result.value:.4f} ({better} the best baseline, {result.baseline:.4f})")
    for name, value in result.baselines.items():
        print(f"  baseline {name}: {value:.4f}")
    for name, value in result.details.items():
        if isinstance(value, dict):
            print(f"  {name}:")
            for key, entry in value.items():
                print(f"    {key}: {entry}")
        else:
            print(f"  {name}: {value}")
    if result.examples:
        print("examples:")
        for line in result.examples:
            print(f"  {line}")
    if args.save:
        print(f"checkpoint saved to {args.save}")
    if args.metrics_out:
        _write_json(args.metrics_out, result.metrics())
    if args.plot:
        from .plotting import plot_result
        plot_result(result, args.plot)
        print(f"plot saved to {args.plot}")
    return 0


def cmd_predict(args) -> int:
    """Read inputs one per line from FILE or standard input and print one prediction per line."""
    with one_blas_thread():
        return predict_lines(args)


def predict_lines(args) -> int:
    """The body of ``predict``."""
    from .checkpoint import read
    index, _ = read(args.checkpoint)
    task = get_task(index["meta"].get("task", "?"))
    if args.input == "-":
        lines = sys.stdin.read().split("\n")
    else:
        with open(args.input, encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
    lines = [line.rstrip("\r") for line in lines if line.strip()]
    for prediction in task.predict(args.checkpoint, lines, backend=args.backend):
        print(prediction)
    return 0


def _log(line):
    """Per-epoch log lines on standard error."""
    print(line, file=sys.stderr)


def _write_json(path, record):
    """Write ``record`` to ``path`` atomically."""
    write_atomically(path, json.dumps(record, indent=1) + "\n")
