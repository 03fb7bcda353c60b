"""Univariate forecasting of a ``date,value`` CSV: an RNN on windows of past changes vs persistence and seasonal naive.

Protocol: a chronological hold-out (the last ``n_test`` values), the validation part just before it, training
on the rest. The season m is the lag 2..N/3 with the highest autocorrelation of the training part's first
differences (12 for monthly airline passengers, about 11 for the sunspot cycle), or ``--season``. The model sees
z = log(y) (when every value is positive) or y, as standardised first differences over a window of 2m+1 steps (at
most 64), and predicts the next change. Metrics are RMSE and MAE on the original scale, for one-step forecasts
(each from the true history) and for a multi-step forecast (from the end of the validation part, feeding
predictions back).

A recursive forecast adds up its own errors, so over long horizons it can drift away from the series. The
multi-step forecast is checked over the same horizon from eight origins, spread over the two horizons up to the
start of the validation part (the last origin's forecast covers the validation part): when it loses there to the
better naive multi-step forecast (persistence or seasonal naive), it is shrunk toward that one,
f_h = naive_h + φ^h (rnn_h - naive_h) for h = 0, 1, ..., with the damping φ in [0, 1) of the lowest RMSE over all
origins; otherwise it stays as it is (φ = 1). Each recursive change is also kept within the largest change seen in
training.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np

from .. import checkpoint
from ..data import Batch, minibatches
from ..datasets import default_data, read_text
from ..layers import to_host
from ..losses import mean_squared_error
from ..models import Forecaster
from ..optimizers import Adam
from ..training import Member, fingerprint, train_members
from . import TaskResult
from .base import CELL, Data, Option, Task, whole_number

HYPERPARAMETERS = dict(hidden_size=32)
TRAINING = dict(lr=0.005, batch_size=16, epochs=150, updates=3000, patience=20, clip_norm=1.0, ensemble=5)
MAX_WINDOW = 64                # steps of past changes the RNN reads (2m+1 up to this)
DAMPING = (0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)   # φ < 1 tried for a losing recursion
ORIGINS = 8                    # forecast origins, up to the start of the validation part, that choose φ


def read_series(path):
    """(dates, values) from a CSV with a header line and rows ``date,value``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a CSV file with a header and rows 'date,value'")
    rows = [row for row in csv.reader(io.StringIO(read_text(path))) if row]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header line and rows 'date,value', got {len(rows)} lines")
    dates, values = [], []
    for number, row in enumerate(rows[1:], 2):
        if len(row) != 2:
            raise ValueError(f"{path}:{number}: expected 2 columns 'date,value', got {len(row)}: "
                             f"{','.join(row)[:60]!r}")
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

    def __init__(self, log, mean, std, limit=None):
        self.log, self.mean, self.std = bool(log), float(mean), float(std)
        self.limit = None if limit is None else float(limit)

    @classmethod
    def fit(cls, train_values, all_values):
        """The difference statistics from the training part; log only when every value of the series is positive."""
        log = bool((all_values > 0).all())
        d = np.diff(np.log(train_values) if log else train_values)
        standardised = (d - d.mean()) / (d.std() + 1e-8)
        return cls(log, d.mean(), d.std() + 1e-8, np.abs(standardised).max())

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
        return {"log": self.log, "mean": self.mean, "std": self.std, "limit": self.limit}


def windows(changes, window, start, stop):
    """Inputs (window, N, 1) and targets (N, 1): changes[t] from changes[t-window:t], for start <= t < stop."""
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
    """Forecast ``steps`` values after a history (L,) -> (steps,), or after each of N histories (N, L) -> (N, steps),
    feeding each forecast back as input (each change kept within the largest standardised change of training)."""
    histories = np.atleast_2d(np.asarray(history, dtype=np.float64))
    z = np.zeros((len(histories), window + 1 + steps))                     # (N, window + 1 + steps) levels
    z[:, :window + 1] = scaler.to_level(histories[:, -(window + 1):])
    for s in range(steps):
        changes = (np.diff(z[:, s:s + window + 1], axis=1) - scaler.mean) / scaler.std      # (N, window)
        change = predict_changes(models, changes.T[:, :, None])                              # (N,)
        if scaler.limit is not None:
            change = np.clip(change, -scaler.limit, scaler.limit)
        z[:, window + 1 + s] = z[:, window + s] + change * scaler.std + scaler.mean
    forecasts = scaler.from_level(z[:, window + 1:])
    return forecasts[0] if np.ndim(history) == 1 else forecasts


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


def damped(rnn, naive, phi):
    """naive_h + φ^h (rnn_h - naive_h) for h = 0, 1, ... (the last axis): the recursive forecast shrunk toward a
    naive one."""
    return naive + phi ** np.arange(np.shape(rnn)[-1]) * (rnn - naive)


def choose_damping(models, scaler, window, values, season, first, last):
    """(naive forecast name, φ) for multi-step forecasts of ``last - first`` steps, from several origins up to the
    start of the validation part ``first``: φ = 1 (the recursive forecast as it is) when it beats the better naive
    forecast there, else the φ < 1 with the lowest RMSE toward that naive forecast."""
    horizon = last - first
    earliest = max(window + 1, season, first - 2 * horizon)
    origins = np.unique(np.linspace(min(earliest, first), first, ORIGINS).astype(int))
    truth = np.stack([values[o:o + horizon] for o in origins])                          # (origins, horizon)
    rnn = multi_step(models, scaler, window, np.stack([values[o - window - 1:o] for o in origins]), horizon)
    naive = {}
    for name in ("persistence", "seasonal naive"):
        naive[name] = np.stack([baselines(values, season, o, o + horizon)[f"{name} multi-step"] for o in origins])
    rmse = {name: rmse_mae(forecast, truth)[0] for name, forecast in naive.items()}
    reference = min(rmse, key=rmse.get)
    if rmse_mae(rnn, truth)[0] < rmse[reference]:
        return reference, 1.0
    phi = min(DAMPING, key=lambda phi: (rmse_mae(damped(rnn, naive[reference], phi), truth)[0], -phi))
    return reference, float(phi)


def check_series(values, log, where):
    """A ValueError unless every value is finite (and positive for a log-scale model)."""
    for i, value in enumerate(values.tolist()):
        if not np.isfinite(value):
            raise ValueError(f"{where}: the value {value} (position {i + 1}) is not finite")
        if log and value <= 0:
            raise ValueError(f"{where}: the value {value} (position {i + 1}) is not positive; this model works on "
                             "log values")


def score(models, scaler, window, season, damping, dates, values, n_train, n_val):
    """Forecasts of the test part and their (RMSE, MAE), with the naive baselines'."""
    first, last = n_train + n_val, len(values)
    truth = values[first:last]
    naive = baselines(values, season, first, last)
    recursive = multi_step(models, scaler, window, values[:first], last - first)
    reference, phi = damping
    forecasts = {"RNN": one_step(models, scaler, window, values, first, last),
                 "RNN multi-step": damped(recursive, naive[f"{reference} multi-step"], phi),
                 "RNN multi-step, undamped": recursive, **naive}
    return forecasts, {name: rmse_mae(f, truth) for name, f in forecasts.items()}


class Timeseries(Task):
    """Forecasting the next value of a univariate series."""

    name = "timeseries"
    summary = "univariate forecasting of a date,value CSV -> RMSE on a chronological hold-out"
    data = Data("monthly airline passengers 1949-1960 (also bundled: yearly sunspots 1700-2008)",
                "a CSV file with a header and rows 'date,value'", lambda: default_data("timeseries"))
    metric = "test RMSE (one-step)"
    higher_is_better = False
    baselines = ("persistence", "seasonal naive")
    options = (Option("season", "the season length m in steps (default: detected from the training part)",
                      type=whole_number(2)), CELL)

    def prepare(self, data, season=None):
        """(path, dates, values, n_train, n_val, n_test, season) of the data, split chronologically."""
        path = Path(data) if data else default_data("timeseries")
        dates, values = read_series(path)
        m = season or detect_season(values[:len(values) * 3 // 5])
        n_train, n_val, n_test = split_sizes(len(values), m)
        if season is not None and 2 * season > n_train:
            raise ValueError(f"--season {season}: too long for {len(values)} values (the training part has "
                             f"{n_train}); give at most {max(2, n_train // 2 - 1)}")
        return path, dates, values, n_train, n_val, n_test, season or detect_season(values[:n_train])

    def train(self, data=None, *, backend=None, epochs=None, seed=0, save=None, resume=False, progress=True,
              log=None, season=None, cell="rnn"):
        """Train an ensemble of forecasters; a TaskResult with one-step test RMSE against the better baseline."""
        started = time.perf_counter()
        season_option = season
        path, dates, values, n_train, n_val, n_test, season = self.prepare(data, season)
        window = min(2 * season + 1, n_train // 3, MAX_WINDOW)
        scaler = Scaler.fit(values[:n_train], values)
        changes = scaler.changes(scaler.to_level(values))                  # changes[t] = z[t+1] - z[t], standardised
        train_x, train_y = windows(changes, window, 0, n_train - 1)
        val_x, val_y = windows(changes, window, n_train - 1, n_train + n_val - 1)
        batches_per_epoch = -(-train_x.shape[1] // TRAINING["batch_size"])
        if epochs is None:                      # a long series gets fewer, longer epochs: the same update budget
            epochs = max(1, min(TRAINING["epochs"], TRAINING["updates"] // batches_per_epoch))
        members = []
        for member in range(TRAINING["ensemble"]):
            model = Forecaster(1, **HYPERPARAMETERS, cell=cell, backend=backend, seed=seed * 1000 + member)
            rng = np.random.default_rng(seed * 1000 + member)
            members.append(Member(model, Adam(TRAINING["lr"]), lambda epoch, rng=rng: [
                Batch((train_x[:, rows],), train_y[rows])
                for rows in minibatches(train_x.shape[1], TRAINING["batch_size"], rng)], rngs=[rng]))

        def validate(m):
            """Validation MSE of the standardised changes."""
            return {"val_loss": float(np.mean((predict_changes([m], val_x) - val_y[:, 0]) ** 2))}

        meta = {"task": self.name, "scaler": scaler.config(), "window": window, "season": season,
                "season_option": season_option, "data": path.name}
        run = train_members(members, mean_squared_error, validate, epochs=epochs, meta=meta, save=save,
                            resume=resume, data_fingerprint=fingerprint(values, season, window, seed, cell),
                            patience=TRAINING["patience"], clip_norm=TRAINING["clip_norm"], progress=progress,
                            log=log, description="forecaster")
        damping = choose_damping(run.models, scaler, window, values, season, n_train, n_train + n_val)
        result = self.result(run.models, scaler, window, season, damping, path, dates, values, n_train, n_val,
                             run.histories, started)
        if save:
            checkpoint.save(save, run.models, {**meta, "damping": list(damping)})
        return result

    def result(self, models, scaler, window, season, damping, path, dates, values, n_train, n_val, histories,
               started):
        """The TaskResult of the ensemble on the test part."""
        first = n_train + n_val
        forecasts, scores = score(models, scaler, window, season, damping, dates, values, n_train, n_val)
        truth = values[first:]
        examples = [f"{dates[first + i]}: truth {truth[i]:g}, RNN one-step {forecasts['RNN'][i]:.1f}, "
                    f"multi-step {forecasts['RNN multi-step'][i]:.1f}" for i in range(min(3, len(truth)))]
        return TaskResult(task=self.name, backend=models[0].backend.name, metric=self.metric, value=scores["RNN"][0],
                          baselines={"persistence": scores["persistence"][0],
                                     "seasonal naive": scores["seasonal naive"][0]},
                          higher_is_better=False, histories=histories, seconds=time.perf_counter() - started,
                          details={"data": path.name, "values": len(values), "train": n_train, "validation": n_val,
                                   "test": len(truth), "season": season, "window": window, "log": scaler.log,
                                   "multi-step damping": f"phi {damping[1]:g} toward {damping[0]}",
                                   "scores (RMSE, MAE)": {k: (round(v[0], 3), round(v[1], 3))
                                                          for k, v in scores.items()}},
                          examples=examples,
                          plot_series={"dates": dates, "values": values, "first": first,
                                       "forecasts": {k: forecasts[k] for k in ("RNN", "RNN multi-step",
                                                                               "seasonal naive")}})

    def evaluate(self, directory, data=None, *, backend=None):
        """Score a saved ensemble on the test part of ``data`` (default: the bundled series)."""
        started = time.perf_counter()
        models, meta = checkpoint.load(directory, backend, task="timeseries", classes=("Forecaster",))
        path, dates, values, n_train, n_val, _, _ = self.prepare(data, meta.get("season_option"))
        scaler = Scaler(**meta["scaler"])
        check_series(values, scaler.log, path)
        damping = tuple(meta.get("damping", ("seasonal naive", 1.0)))                # none saved: undamped
        return self.result(models, scaler, meta["window"], meta["season"], damping, path, dates, values, n_train,
                           n_val, [], started)

    def predict(self, directory, lines, *, backend=None):
        """For each input line of comma- or space-separated past values, the forecast of the next value."""
        models, meta = checkpoint.load(directory, backend, task="timeseries", classes=("Forecaster",))
        scaler, window = Scaler(**meta["scaler"]), meta["window"]
        out = []
        for number, line in enumerate(lines, 1):
            try:
                history = np.array([float(v) for v in line.replace(",", " ").split()])
            except ValueError:
                raise ValueError(f"input line {number}: expected numbers separated by commas or spaces") from None
            if len(history) < window + 1:
                raise ValueError(f"input line {number}: need at least {window + 1} past values, got {len(history)}")
            check_series(history, scaler.log, f"input line {number}")
            out.append(f"{float(multi_step(models, scaler, window, history, 1)[0]):.4f}")
        return out


TASK = Timeseries()
