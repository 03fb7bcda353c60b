"""The task contract: what every task declares (name, options, data, metric, baselines) and what it implements.

A task is a subclass of ``Task`` with one instance, ``TASK``, in its module ``rnnbackends.tasks.<name>``, listed
in ``rnnbackends.tasks.TASKS``. The CLI builds ``train``'s flags from ``options``, checks every argument with
``check_options`` and ``check_data`` before any work, and calls ``train``; ``predict`` serves the ``predict``
command for the task's checkpoints and ``evaluate`` re-scores a checkpoint on the task's test part.

The keyword arguments of ``train`` are the same for every task:

- ``data``: a path, or None for the task's default (``Data``); ``backend``: a backend name or None;
- ``epochs``: the maximum epochs (None: the task's own), ``seed``: weights, dropout and shuffling (>= 0);
- ``save``: the ``--save`` folder or None; ``resume``: continue the interrupted run saved there;
- ``progress``: progress bars; ``log``: a function taking one line, or None;
- one keyword per ``Option``, named ``Option.name``.

Training goes through ``rnnbackends.training.train_members``, which tracks the best weights, saves the best and
the last-epoch checkpoints under ``save`` and resumes every member of an ensemble from its last finished epoch.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """A task-specific option of ``train``: the keyword ``name``, the flag ``--name`` (underscores as dashes)."""

    name: str
    help: str
    default: Any = None
    choices: tuple = ()
    type: Callable = str

    @property
    def flag(self):
        """The command-line flag, e.g. ``--level``."""
        return "--" + self.name.replace("_", "-")


def whole_number(low, why=""):
    """An ``Option.type``: a whole number >= ``low`` (``why`` explains the bound in the error)."""
    def parse(value):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not number.is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        if number < low:
            raise ValueError(f"must be at least {low}{why}, got {int(number)}")
        return int(number)
    return parse


def number_in(low, high, what, include_low=True, include_high=False):
    """An ``Option.type``: a number in the interval from ``low`` to ``high`` (``what`` names it in the error)."""
    interval = f"{'[' if include_low else '('}{low:g}, {high:g}{']' if include_high else ')'}"

    def parse(value):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        above = low <= number if include_low else low < number
        below = number <= high if include_high else number < high
        if not (above and below):
            raise ValueError(f"expected {what} in {interval}, got {value!r}")
        return number
    return parse


CELL = Option("cell", "the recurrent cell: the lecture's simple RNN, or a gated GRU or LSTM", "rnn",
              ("rnn", "gru", "lstm"))   # every task takes --cell


@dataclass(frozen=True)
class Data:
    """A task's data: what the default is, what ``--data`` accepts, and where the default lives."""

    description: str                       # e.g. "UCI Sentiment Labelled Sentences, 3,000 sentences"
    accepts: str                           # e.g. "a 'sentence<TAB>label' file or a folder of *_labelled.txt"
    default: Callable[[], Path]            # the bundled default's path (a file or a folder inside the package)
    kind: str = "file"                     # what ``--data`` must name: "file", "folder" or "file or folder"


class Task(ABC):
    """One task of the CLI: real data, a fixed split, a metric against baselines on the same split."""

    name: str                              # the CLI's task name, e.g. "sentiment"
    summary: str                           # one line for ``train --help``
    data: Data
    metric: str                            # as reported, e.g. "test accuracy"
    higher_is_better: bool
    baselines: tuple                       # the baselines' names, as in ``TaskResult.baselines``
    options: tuple = ()                    # extra ``train`` options (``Option``)
    predict_input: str = "lines"           # what ``predict`` reads: "lines" of FILE|-, or "paths" (files to read)

    @abstractmethod
    def train(self, data=None, *, backend=None, epochs=None, seed=0, save=None, resume=False, progress=True,
              log=None, **options):
        """Train on ``data`` (or the default) and return a ``TaskResult`` scored on the test part."""

    @abstractmethod
    def evaluate(self, directory, data=None, *, backend=None):
        """Score the checkpoint in ``directory`` on the test part of ``data`` (or the default): a ``TaskResult``."""

    @abstractmethod
    def predict(self, directory, lines, *, backend=None):
        """One output line per input line (or per input file, for ``predict_input = "paths"``), from the
        checkpoint in ``directory``."""

    def check_options(self, options):
        """The options with defaults filled in; a ValueError naming the flag for an unknown or invalid one."""
        known = {option.name: option for option in self.options}
        checked = {name: option.default for name, option in known.items()}
        for name, value in options.items():
            if name not in known:
                raise ValueError(f"task {self.name} does not take --{name.replace('_', '-')}")
            if value is None:
                continue
            option = known[name]
            try:
                value = option.type(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{option.flag}: {exc}") from None
            if option.choices and value not in option.choices:
                raise ValueError(f"{option.flag} must be one of {', '.join(map(str, option.choices))}, got {value!r}")
            checked[name] = value
        return checked

    def check_data(self, path):
        """A ValueError when ``path`` (given with ``--data``) cannot be this task's data: missing or the wrong kind."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"--data {path}: no such file or folder")
        if self.data.kind == "file" and not path.is_file():
            raise ValueError(f"--data {path}: is a folder; give {self.data.accepts}")
        if self.data.kind == "folder" and not path.is_dir():
            raise ValueError(f"--data {path}: is a file; give {self.data.accepts}")
