"""Tasks: real data, a deterministic split, the conventional metric, and baselines computed on the same split."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

TASKS = {"sentiment": "many-to-one sentence sentiment (UCI yelp+amazon+imdb) -> accuracy",
         "timeseries": "univariate forecasting of a date,value CSV -> RMSE on a chronological hold-out",
         "tagging": "many-to-many part-of-speech tagging (UD English-EWT) -> UPOS accuracy, also on unseen words",
         "textgen": "character (or word) language model on tiny Shakespeare -> validation nats/char; generation",
         "translation": "English -> Spanish encoder-decoder (Tatoeba) -> corpus BLEU, greedy and beam search",
         "speech": "speech recognition of spoken digit strings (CTC) -> word error rate on unheard voices"}


@dataclass
class TaskResult:
    """What a training run reports: the metric against the baselines, the histories, examples and details."""

    task: str
    backend: str
    metric: str
    value: float
    baselines: dict
    higher_is_better: bool
    histories: list
    seconds: float
    details: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    plot_series: dict = field(default_factory=dict)

    @property
    def baseline(self):
        """The better of the baselines."""
        pick = max if self.higher_is_better else min
        return pick(self.baselines.values())

    @property
    def beats_baseline(self):
        """Whether the model is strictly better than the best baseline."""
        return self.value > self.baseline if self.higher_is_better else self.value < self.baseline

    def metrics(self):
        """The ``--metrics-out`` record."""
        return {"task": self.task, "backend": self.backend, "metric": self.metric, "value": self.value,
                "baseline": self.baseline, "higher_is_better": self.higher_is_better, "seconds": self.seconds,
                "details": plain(self.details)}


def plain(value):
    """``value`` with NumPy scalars and arrays as Python numbers and lists (inside dicts, lists and tuples too)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value.tolist() if hasattr(value, "tolist") else value


def get_task(name):
    """Task ``name``: the ``TASK`` of module ``rnnbackends.tasks.<name>`` (see ``rnnbackends.tasks.base``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return importlib.import_module(f"{__name__}.{name}").TASK
