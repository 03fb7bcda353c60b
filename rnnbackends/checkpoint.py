"""Checkpoints without pickle: weights in an ``.npz``, config and vocabulary in ``checkpoint.json``, written atomically.

A checkpoint directory holds ``checkpoint.json`` and the ``weights-<hash>.npz`` it names. Saving writes the new
weights file under a new name, then replaces ``checkpoint.json`` with ``os.replace`` (atomic on POSIX and
Windows), then removes weights files nothing names any more; a crash at any point leaves a loadable checkpoint,
the old one or the new one. Weights are host NumPy arrays, so a checkpoint loads on any backend.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from .files import write_atomically
from .models import build_model

FORMAT, VERSION, INDEX = "rnnbackends-checkpoint", 1, "checkpoint.json"


def save(directory, models, meta, optimizers=None):
    """Save one model or a list of models (an ensemble), JSON-ready ``meta`` and optional optimiser states."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    models = models if isinstance(models, (list, tuple)) else [models]
    optimizers = [] if optimizers is None else (optimizers if isinstance(optimizers, (list, tuple)) else [optimizers])
    arrays, described, iterations = {}, [], []
    for i, model in enumerate(models):
        for name, value in model.state_dict().items():
            arrays[f"model{i}/{name}"] = value
        described.append({"class": type(model).__name__, "config": model.config, "dtype": model.dtype.name})
    for i, optimizer in enumerate(optimizers):
        state = optimizer.state_dict()
        iterations.append({"class": type(optimizer).__name__, "iterations": state["iterations"]})
        for name, value in state["arrays"].items():
            arrays[f"optimizer{i}/{name}"] = value
    staging = tempfile.SpooledTemporaryFile()
    np.savez(staging, **arrays)
    staging.seek(0)
    payload = staging.read()
    digest = hashlib.sha256(payload).hexdigest()
    weights = directory / f"weights-{digest[:16]}.npz"
    write_atomically(weights, payload)
    index = {"format": FORMAT, "version": VERSION, "weights": weights.name, "sha256": digest,
             "models": described, "optimizers": iterations, "meta": meta}
    write_atomically(directory / INDEX, json.dumps(index, indent=1))
    for stale in directory.glob("weights-*.npz"):
        if stale.name != weights.name:
            stale.unlink()


def read(directory):
    """(index dict, host arrays dict) of a checkpoint, checked for format and integrity; arrays load without pickle."""
    directory = Path(directory)
    index_path = directory / INDEX
    if not index_path.is_file():
        raise ValueError(f"{directory}: not a checkpoint (no {INDEX}); save one with 'rnnbackends train ... --save DIR'")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{index_path}: not valid JSON ({exc})") from None
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{index_path}: not an {FORMAT} version {VERSION} file")
    payload = (directory / index["weights"]).read_bytes()
    if hashlib.sha256(payload).hexdigest() != index["sha256"]:
        raise ValueError(f"{directory / index['weights']}: contents do not match the hash in {INDEX}")
    with np.load(directory / index["weights"], allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return index, arrays


def load(directory, backend=None):
    """(models, meta): every saved model rebuilt on ``backend`` (any backend) with its weights, and the meta dict."""
    index, arrays = read(directory)
    models = []
    for i, described in enumerate(index["models"]):
        model = build_model(described["class"], described["config"], backend=backend, dtype=described["dtype"])
        prefix = f"model{i}/"
        model.load_state_dict({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        model.eval()
        models.append(model)
    return models, index["meta"]


def load_optimizer_states(directory, optimizers, xp):
    """Restore the saved states into ``optimizers`` (the same classes, in the same order) for resuming."""
    index, arrays = read(directory)
    for i, (saved, optimizer) in enumerate(zip(index["optimizers"], optimizers)):
        if saved["class"] != type(optimizer).__name__:
            raise ValueError(f"checkpoint optimiser {i} is {saved['class']}, not {type(optimizer).__name__}")
        prefix = f"optimizer{i}/"
        optimizer.load_state_dict({"iterations": saved["iterations"],
                                   "arrays": {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}}, xp)
