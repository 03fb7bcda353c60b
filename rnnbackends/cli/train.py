"""``train`` and ``evaluate``: every argument checked before any work, then the task's ``train`` or ``evaluate``."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

from .. import checkpoint, distributed
from ..files import write_atomically
from ..tasks import TASKS, get_task
from .common import (
    add_backend_option,
    add_checkpoint_option,
    announce_compilation,
    check_backend,
    integer,
    log_line,
    one_blas_thread,
    path,
    reading_checkpoint,
    text,
)


def task_list():
    """The tasks, their data and whether that data ships with this installation, for ``train --help``."""
    lines = ["tasks:"]
    for name in TASKS:
        task = get_task(name)
        try:
            bundled = task.data.default().exists()
        except (OSError, ValueError):
            bundled = False
        where = "bundled" if bundled else "NOT installed: give --data"
        lines.append(f"  {name:12s} {task.summary}")
        lines.append(f"  {'':12s} data: {task.data.description} ({where}); --data takes {task.data.accepts}")
    return "\n".join(lines)


def add_train_commands(sub):
    """Add ``train`` and ``evaluate`` to the CLI's sub-parsers."""
    p = sub.add_parser("train", help="train a task on real data and report its metric against its baselines",
                       epilog=task_list(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", type=text, help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--data", type=path, metavar="PATH", help="the task's data (default: the task's own, listed below)")
    add_backend_option(p)
    p.add_argument("--epochs", type=integer(1), metavar="N", help="maximum epochs (default: the task's)")
    p.add_argument("--seed", type=integer(0), default=0, metavar="S", help="seed of weights and shuffling (default 0)")
    p.add_argument("--save", type=path, metavar="DIR",
                   help="write checkpoints to DIR (a new or empty folder, or one holding a checkpoint of this task)")
    p.add_argument("--force", action="store_true",
                   help="write into --save DIR even when it holds other files or another task's checkpoint")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --save DIR from its last finished epoch (same command otherwise)")
    p.add_argument("--metrics-out", type=path, metavar="FILE.json",
                   help="write {task, backend, metric, value, baseline, higher_is_better}")
    p.add_argument("--plot", type=path, metavar="FILE.png", help="save loss curves (and the forecasts for time series)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch log")
    seen = {}
    for name in TASKS:
        for option in get_task(name).options:
            seen.setdefault(option.flag, (option, []))[1].append(name)
    for flag, (option, tasks) in seen.items():
        choices = f" ({'|'.join(map(str, option.choices))})" if option.choices else ""
        p.add_argument(flag, dest=f"option_{option.name}", type=checked(option.type), metavar=option.name.upper(),
                       help=f"{', '.join(tasks)}: {option.help}{choices}")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="score a saved checkpoint on its task's test part")
    add_checkpoint_option(p)
    p.add_argument("--data", type=path, metavar="PATH", help="the task's data (default: the task's own)")
    add_backend_option(p)
    p.set_defaults(func=cmd_evaluate)


def checked(convert):
    """An argparse type from a task option's ``type``: its ValueError message becomes the argument's error."""
    def parse(value):
        try:
            return convert(text(value))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def check_output_file(value, option, suffixes=None):
    """A ValueError unless ``value`` can be written as a file: not a folder, in an existing writable folder."""
    value = Path(value)
    if value.is_dir():
        raise ValueError(f"{option} {value}: is a folder; give a file name inside it")
    if not value.resolve().parent.is_dir():
        raise ValueError(f"{option} {value}: the folder {value.parent} does not exist")
    if suffixes is not None and value.suffix.lower().lstrip(".") not in suffixes:
        raise ValueError(f"{option} {value}: give a file name ending in one of "
                         f"{', '.join('.' + s for s in sorted(suffixes))}")


def plot_suffixes():
    """The image formats matplotlib writes; a ValueError when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib: pip install 'rnnbackends[plot]'")
    from matplotlib.backend_bases import FigureCanvasBase
    return set(FigureCanvasBase.get_supported_filetypes())


def saved_task(folder):
    """The task of this project's checkpoint in ``folder`` (its index checked, the weights unread), or None."""
    try:
        return str(checkpoint.read_index(folder)["meta"].get("task"))
    except ValueError:
        return None


def foreign_entries(folder):
    """(paths in ``folder`` that a ``--save`` run did not write, the tasks of the checkpoints it holds)."""
    index = folder / checkpoint.INDEX
    task = saved_task(folder) if index.is_file() else None
    foreign, tasks = [], set() if task is None else {task}
    for entry in sorted(folder.iterdir()):
        if entry.name == checkpoint.INDEX and task is not None:
            continue
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
            continue                                                  # an atomic write cut short
        if task is not None and entry.is_file() and entry.name.startswith("weights-") and entry.suffix == ".npz":
            continue
        if entry.is_dir() and not entry.is_symlink() and (entry.name == "last" or entry.name.startswith("member-")):
            inner, inner_tasks = foreign_entries(entry)
            foreign += inner
            tasks |= inner_tasks
            continue
        foreign.append(entry)
    return foreign, tasks


def check_save_folder(save, task, force, resume):
    """A ValueError when ``--save`` would overwrite or delete anything but this task's own checkpoint files."""
    save = Path(save)
    if save.exists() and not save.is_dir():
        raise ValueError(f"--save {save}: is a file; give a folder (new, or one holding a checkpoint of this task)")
    if not save.exists():
        if resume:
            raise ValueError(f"--resume: {save} does not exist; give the --save folder of the interrupted run")
        return
    foreign, tasks = foreign_entries(save)
    if force and not resume:
        return
    if foreign:
        shown = ", ".join(p.name for p in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ValueError(f"--save {save}: holds files that are not an rnnbackends checkpoint ({shown}); choose a new "
                         "or empty folder, or add --force to write into it anyway")
    other = sorted(tasks - {task})
    if other:
        raise ValueError(f"--save {save}: holds a {other[0]} checkpoint, not a {task} one; choose another folder, "
                         "or add --force to replace it")


def check_train_arguments(args, task):
    """Every check of ``train`` that needs no training: options, data, output paths, optional dependencies."""
    options = task.check_options({name[len("option_"):]: value for name, value in vars(args).items()
                                  if name.startswith("option_") and value is not None})
    if args.data is not None:
        task.check_data(args.data)
    if args.resume and args.save is None:
        raise ValueError("--resume needs --save DIR (the folder of the interrupted run)")
    if args.save is not None:
        check_save_folder(args.save, task.name, args.force, args.resume)
    if args.metrics_out is not None:
        check_output_file(args.metrics_out, "--metrics-out")
    if args.plot is not None:
        check_output_file(args.plot, "--plot", plot_suffixes())
    outputs = [p.resolve() for p in (args.metrics_out, args.plot) if p is not None]
    if len(set(outputs)) < len(outputs):
        raise ValueError("--metrics-out and --plot name the same file; give two file names")
    return options


@distributed.together()                  # `mpiexec -n N`: an error on one rank prints it and stops every rank
def cmd_train(args) -> int:
    """Train TASK, print the metric beside the baselines and a few example predictions; save, plot, write metrics."""
    task = get_task(args.task)
    options = check_train_arguments(args, task)
    backend = check_backend(args.backend)
    announce_compilation(backend)
    root = distributed.current().rank == 0                # `mpiexec -n N`: rank 0 alone saves, logs and reports
    with one_blas_thread():
        result = task.train(data=args.data, backend=args.backend, epochs=args.epochs, seed=args.seed,
                            save=args.save if root else None, resume=args.resume and root,
                            progress=root and not args.quiet, log=None if args.quiet or not root else log_line,
                            **options)
    if not root:
        return 0
    report(result)
    if args.save:
        print(f"checkpoint saved to {args.save}")
    if args.metrics_out:
        write_metrics(args.metrics_out, result.metrics())
    if args.plot:
        if hasattr(task, "plot"):                                        # a task's own figure (speech)
            task.plot(result, args.plot)
        else:
            from ..plotting import plot_result
            plot_result(result, args.plot)
        print(f"plot saved to {args.plot}")
    return 0


def cmd_evaluate(args) -> int:
    """Score a checkpoint on its task's test part and print the metric beside the baselines."""
    task = get_task(checkpoint_task(args.checkpoint))
    if args.data is not None:
        task.check_data(args.data)
    announce_compilation(check_backend(args.backend))
    with one_blas_thread(), reading_checkpoint(args.checkpoint):
        report(task.evaluate(args.checkpoint, args.data, backend=args.backend))
    return 0


def checkpoint_task(directory):
    """The task name a checkpoint folder was saved by; a ValueError when it is not a checkpoint of a known task."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"--checkpoint {directory}: no such folder" if not directory.exists()
                         else f"--checkpoint {directory}: is a file; give the folder written by 'train --save'")
    task = str(checkpoint.read_index(directory)["meta"].get("task"))
    if task not in TASKS:
        raise ValueError(f"{directory}: a checkpoint of task {task!r}, which this version does not know "
                         f"(tasks: {', '.join(TASKS)})")
    return task


def report(result):
    """Print a TaskResult: the metric, the baselines, details and examples."""
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


def finite_or_null(value):
    """JSON-ready: non-finite floats become null (JSON has no NaN or Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def write_metrics(path, record):
    """Write ``record`` to ``path`` atomically as strict JSON (a non-finite number is written as null)."""
    write_atomically(path, json.dumps(finite_or_null(record), indent=1, allow_nan=False) + "\n")
