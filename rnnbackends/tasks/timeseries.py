"""Univariate forecasting of a ``date,value`` CSV: an RNN on windows of past changes vs persistence and seasonal naive.

Protocol: a chronological hold-out (the last ``n_test`` values), the validation part just before it, training
on the rest. The season m is the lag 2..N/3 with the highest autocorrelation of the training part's first
differences (12 for monthly airline passengers, about 11 for the sunspot cycle). The model sees z = log(y)
(when all values are positive) or y, as standardised first differences over a window of 2m+1 steps, and
predicts the next change. Metrics are RMSE and MAE on the original scale, for one-step forecasts (each from
the true history) and for a multi-step forecast (from the end of the validation part, feeding predictions back).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from .. import checkpoint
from ..data import Batch, minibatches
from ..layers import to_host
from ..losses import mean_squared_error
from ..models import Forecaster
from ..optimizers import Adam
from ..training import fit
from . import TaskResult

BUNDLED = Path(__file__).resolve().parent.parent / "datasets" / "timeseries" / "airline-passengers.csv"
HYPERPARAMETERS = dict(hidden_size=32)
TRAINING = dict(lr=0.005, batch_size=16, epochs=150, patience=20, clip_norm=1.0, ensemble=5)


def read_series(path):
    """(dates, values) from a CSV with a header line and rows ``date,value``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a CSV file with a header and rows 'date,value'")
    with open(path, encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header line and rows 'date,value', got {len(rows)} lines")
    dates, values = [], []
    for number, row in enumerate(rows[1:], 2):
        if len(row) != 2:
            raise ValueError(f"{path}:{number}: expected 2 columns 'date,value', got {len(row)}: {','.join(row)[:60]!r}")
        try:
            values.append(float(row[1]))
        except ValueError:
            raise ValueError(f"{path}:{number}: the value {row[1]!r} is not a number") from None
        dates.append(row[0])
    values = np.array(values)
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: the series holds NaN or infinite values")
    if len(values) < 40:
        raise ValueError(f"{path}: {len(values)} values are too few for a chronological split; need at least 40")
    return dates, values


def detect_season(values, max_lag=60):
    """The lag in 2..min(N/3, max_lag) with the highest autocorrelation of the first differences."""
    d = np.diff(values)
    d = d - d.mean()
    lags = np.arange(2, max(3, min(len(d) // 3, max_lag) + 1))
    acf = np.array([np.dot(d[:-k], d[k:]) / (np.dot(d, d) + 1e-12) for k in lags])
    return int(lags[acf.argmax()])


def split_sizes(n, season):
    """(n_train, n_val, n_test): test and validation each max(2m, N/10) values, at most N/4."""
    n_test = min(max(2 * season, n // 10), n // 4)
    return n - 2 * n_test, n_test, n_test


class Scaler:
    """y -> z (log when all training values are positive) -> standardised first differences, and back."""

    def __init__(self, log, mean, std):
        self.log, self.mean, self.std = bool(log), float(mean), float(std)

    @classmethod
    def fit(cls, train_values):
        """Choose the transform and the difference statistics from the training part only."""
        log = bool((train_values > 0).all())
        d = np.diff(np.log(train_values) if log else train_values)
        return cls(log, d.mean(), d.std() + 1e-8)

    def to_level(self, y):
        """y -> z."""
        return np.log(y) if self.log else np.asarray(y, dtype=np.float64)

    def from_level(self, z):
        """z -> y."""
        return np.exp(z) if self.log else z

    def changes(self, z):
        """z (N,) -> standardised changes (N-1,)."""
        return (np.diff(z) - self.mean) / self.std

    def config(self):
        """JSON-ready fields."""
        return {"log": self.log, "mean": self.mean, "std": self.std}


def windows(changes, window, start, stop):
    """Inputs (window, N, 1) and targets (N, 1) for predicting changes[t] from changes[t-window:t], start <= t < stop."""
    targets = np.arange(max(start, window), stop)
    x = np.stack([changes[t - window:t] for t in targets], axis=1)[:, :, None]     # (T, N, 1)
    return x, changes[targets][:, None]


def predict_changes(models, x):
    """Ensemble mean of the predicted next standardised change for each window x (T, N, 1) -> (N,)."""
    return np.mean([to_host(m.forward(x))[:, 0].astype(np.float64) for m in models], axis=0)


def one_step(models, scaler, window, values, first, last):
    """Forecasts of values[first:last], each from the true history before it."""
    z = scaler.to_level(values)
    x, _ = windows(scaler.changes(z), window, first - 1, last - 1)
    change = predict_changes(models, x) * scaler.std + scaler.mean
    return scaler.from_level(z[first - 1:last - 1] + change)


def multi_step(models, scaler, window, history, steps):
    """Forecast ``steps`` values after ``history``, feeding each forecast back as input."""
    z = list(scaler.to_level(history)[-(window + 1):])
    for _ in range(steps):
        changes = scaler.changes(np.array(z[-(window + 1):]))
        change = predict_changes(models, changes[:, None, None]) * scaler.std + scaler.mean
        z.append(z[-1] + float(change[0]))
    return scaler.from_level(np.array(z[-steps:]))


def rmse_mae(prediction, truth):
    """(RMSE, MAE)."""
    error = np.asarray(prediction) - np.asarray(truth)
    return float(np.sqrt(np.mean(error ** 2))), float(np.mean(np.abs(error)))


def baselines(values, season, first, last):
    """One-step and multi-step forecasts of values[first:last] by persistence and seasonal naive."""
    steps = np.arange(last - first)
    return {"persistence": values[first - 1:last - 1],
            "seasonal naive": values[first - season:last - season],
            "persistence multi-step": np.full(last - first, values[first - 1]),
            "seasonal naive multi-step": values[first - season + steps % season]}


def train(data=None, backend=None, epochs=None, seed=0, save=None, progress=True, log=None):
    """Train an ensemble of forecasters; returns a TaskResult with one-step test RMSE against the better baseline."""
    started = time.perf_counter()
    path = Path(data) if data else BUNDLED
    dates, values = read_series(path)
    n_train, n_val, n_test = split_sizes(len(values), detect_season(values[:len(values) * 3 // 5]))
    season = detect_season(values[:n_train])
    window = min(2 * season + 1, n_train // 3)
    scaler = Scaler.fit(values[:n_train])
    changes = scaler.changes(scaler.to_level(values))                  # changes[t] = z[t+1] - z[t], standardised
    train_x, train_y = windows(changes, window, 0, n_train - 1)
    val_x, val_y = windows(changes, window, n_train - 1, n_train + n_val - 1)
    epochs = TRAINING["epochs"] if epochs is None else epochs
    models, histories = [], []
    for member in range(TRAINING["ensemble"]):
        model = Forecaster(1, **HYPERPARAMETERS, backend=backend, seed=seed * 1000 + member)
        rng = np.random.default_rng(seed * 1000 + member)

        def batches(epoch):
            """Shuffled minibatches of training windows."""
            return [Batch((train_x[:, rows],), train_y[rows])
                    for rows in minibatches(train_x.shape[1], TRAINING["batch_size"], rng)]

        def validate(m):
            """Validation MSE of the standardised changes."""
            return {"val_loss": float(np.mean((predict_changes([m], val_x) - val_y[:, 0]) ** 2))}

        histories.append(fit(model, mean_squared_error, Adam(TRAINING["lr"]), batches, epochs=epochs,
                             validate=validate, patience=TRAINING["patience"], clip_norm=TRAINING["clip_norm"],
                             progress=progress, log=log, description=f"forecaster {member + 1}/{TRAINING['ensemble']}"))
        models.append(model)
    first, last = n_train + n_val, len(values)
    truth = values[first:last]
    forecasts = {"RNN": one_step(models, scaler, window, values, first, last),
                 "RNN multi-step": multi_step(models, scaler, window, values[:first], last - first)}
    forecasts.update(baselines(values, season, first, last))
    scores = {name: rmse_mae(f, truth) for name, f in forecasts.items()}
    if save:
        checkpoint.save(save, models, {"task": "timeseries", "scaler": scaler.config(), "window": window,
                                       "season": season, "data": path.name})
    examples = [f"{dates[first + i]}: truth {truth[i]:g}, RNN one-step {forecasts['RNN'][i]:.1f}, "
                f"multi-step {forecasts['RNN multi-step'][i]:.1f}" for i in range(min(3, last - first))]
    return TaskResult(task="timeseries", backend=models[0].backend.name, metric="test RMSE (one-step)", value=scores["RNN"][0],
                      baselines={"persistence": scores["persistence"][0], "seasonal naive": scores["seasonal naive"][0]},
                      higher_is_better=False, histories=histories, seconds=time.perf_counter() - started,
                      details={"data": path.name, "values": len(values), "train": n_train, "validation": n_val,
                               "test": n_test, "season": season, "window": window, "log": scaler.log,
                               "scores (RMSE, MAE)": {k: (round(v[0], 3), round(v[1], 3)) for k, v in scores.items()}},
                      examples=examples,
                      plot_series={"dates": dates, "values": values, "first": first,
                                   "forecasts": {k: forecasts[k] for k in ("RNN", "RNN multi-step", "seasonal naive")}})


def predict(directory, lines, backend=None):
    """For each input line of comma- or space-separated past values, the forecast of the next value."""
    models, meta = checkpoint.load(directory, backend)
    scaler, window = Scaler(**meta["scaler"]), meta["window"]
    out = []
    for number, line in enumerate(lines, 1):
        try:
            history = np.array([float(v) for v in line.replace(",", " ").split()])
        except ValueError:
            raise ValueError(f"input line {number}: expected numbers separated by commas or spaces") from None
        if len(history) < window + 1:
            raise ValueError(f"input line {number}: need at least {window + 1} past values, got {len(history)}")
        if scaler.log and (history <= 0).any():
            raise ValueError(f"input line {number}: this model works on log values; all must be positive")
        out.append(f"{float(multi_step(models, scaler, window, history, 1)[0]):.4f}")
    return out
