"""Checkpoints without pickle: weights in an ``.npz``, config and vocabulary in ``checkpoint.json``, written atomically.

A checkpoint directory holds ``checkpoint.json`` and the ``weights-<hash>.npz`` it names. Saving writes the new
weights file under a new name, then replaces ``checkpoint.json`` with ``os.replace`` (atomic on POSIX and
Windows), then removes weights files nothing names any more; a crash at any point leaves a loadable checkpoint,
the old one or the new one. Weights are host NumPy arrays, so a checkpoint loads on any backend.

Loading trusts nothing in the folder: ``checkpoint.json`` carries a checksum of its own contents and the SHA-256
of the weights file, which must be a regular file named ``weights-<hash>.npz`` inside the folder (no path, no
symlink out of it) and of bounded size; its arrays must be float32 or float64, stored uncompressed, and have
exactly the names and shapes of the model that ``models[i].config`` builds. Anything else is one ``ValueError``.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import os
import re
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import models as model_classes
from .files import write_atomically

FORMAT, VERSION, INDEX = "rnnbackends-checkpoint", 2, "checkpoint.json"
DTYPES = ("float32", "float64")
MAX_INDEX_BYTES = 256 * 2**20                   # checkpoint.json: config, vocabularies, history
MAX_WEIGHTS_BYTES = 8 * 2**30
WEIGHTS_NAME = re.compile(r"weights-[0-9a-f]{16}\.npz")
ARRAY_NAME = re.compile(r"(model|optimizer)(\d+)/(.+)")
NOT_CONFIG = ("self", "backend", "dtype", "seed")
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


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
    index["checksum"] = checksum(index)
    write_atomically(directory / INDEX, json.dumps(index, indent=1))
    for stale in directory.glob("weights-*.npz"):
        if stale.name != weights.name:
            stale.unlink()


def checksum(index):
    """SHA-256 of the index's canonical JSON, leaving out the checksum itself: a later edit changes it."""
    content = {key: value for key, value in index.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_inside(directory, name, limit):
    """The bytes of regular file ``name`` in ``directory`` (a symlink only if it stays inside), at most ``limit``."""
    path = directory / name
    try:
        resolved = path.resolve(strict=True)
        if resolved.parent != directory.resolve(strict=True):
            raise ValueError(f"{path}: points outside the checkpoint folder; refused")
        if not stat.S_ISREG(os.stat(resolved).st_mode):
            raise ValueError(f"{path}: not a regular file; refused")
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            status = os.fstat(f.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise ValueError(f"{path}: not a regular file; refused")
            if status.st_size > limit:
                raise ValueError(f"{path}: {status.st_size} bytes, more than a checkpoint holds ({limit}); refused")
            return f.read(limit + 1)[:limit]
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; the checkpoint is incomplete") from None
    except (OSError, RuntimeError) as exc:                              # permissions, symlink loops
        raise ValueError(f"{path}: cannot read it ({exc.strerror if isinstance(exc, OSError) else exc})") from None


def check_index(index, where):
    """A ValueError unless ``index`` has the fields and types this version writes, and its checksum."""
    if not isinstance(index, dict):
        raise ValueError(f"{where}: not a checkpoint index (a JSON {type(index).__name__}, not an object)")
    if index.get("format") != FORMAT:
        raise ValueError(f"{where}: not an {FORMAT} file")
    if index.get("version") != VERSION:
        raise ValueError(f"{where}: {FORMAT} version {index.get('version')!r}, this rnnbackends reads version "
                         f"{VERSION}; retrain with --save")
    fields = {"weights": str, "sha256": str, "models": list, "optimizers": list, "meta": dict, "checksum": str}
    for key, kind in fields.items():
        if not isinstance(index.get(key), kind):
            raise ValueError(f"{where}: '{key}' is {'missing' if key not in index else 'not a ' + kind.__name__}")
    if index["checksum"] != checksum(index):
        raise ValueError(f"{where}: edited after it was saved (its checksum does not match); save it again")
    if not WEIGHTS_NAME.fullmatch(index["weights"]) or index["weights"] != f"weights-{index['sha256'][:16]}.npz":
        raise ValueError(f"{where}: 'weights' must be the file name weights-<first 16 of sha256>.npz in the "
                         f"checkpoint folder, got {index['weights'][:80]!r}")
    if not index["models"]:
        raise ValueError(f"{where}: no models")
    for i, described in enumerate(index["models"]):
        if not (isinstance(described, dict) and isinstance(described.get("class"), str)
                and isinstance(described.get("config"), dict) and described.get("dtype") in DTYPES):
            raise ValueError(f"{where}: models[{i}] needs 'class', 'config' and 'dtype' (one of {', '.join(DTYPES)})")
        for key, value in described["config"].items():
            if not isinstance(value, (bool, int, float, str, type(None))):
                raise ValueError(f"{where}: models[{i}].config.{key} is a {type(value).__name__}, not a number or text")
    for i, saved in enumerate(index["optimizers"]):
        if not (isinstance(saved, dict) and isinstance(saved.get("class"), str)
                and type(saved.get("iterations")) is int and saved["iterations"] >= 0):
            raise ValueError(f"{where}: optimizers[{i}] needs 'class' and a count of 'iterations'")


def npz_arrays(payload, where):
    """The arrays of an uncompressed ``.npz`` held in ``payload``, each header checked against its size first."""
    arrays = {}
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            for member in archive.infolist():
                if member.compress_type != zipfile.ZIP_STORED or not member.filename.endswith(".npy"):
                    raise ValueError(f"{member.filename!r} is not a stored .npy array")
                if member.filename[:-4] in arrays:
                    raise ValueError(f"{member.filename!r} is stored twice")
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in HEADER_READERS:
                        raise ValueError(f"{member.filename[:-4]}: .npy format version {version}")
                    shape, fortran, dtype = HEADER_READERS[version](f)
                    if dtype.name not in DTYPES or dtype.byteorder not in ("=", "<", ">", "|"):
                        raise ValueError(f"{member.filename[:-4]} is {dtype}, not {' or '.join(DTYPES)}")
                    if math.prod(shape) * dtype.itemsize != member.file_size - f.tell():
                        raise ValueError(f"{member.filename[:-4]}: shape {shape} does not fit its stored size")
                    data = f.read()
                array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
                arrays[member.filename[:-4]] = array.astype(dtype.newbyteorder("="))
    except ValueError as exc:
        raise ValueError(f"{where}: not a weights file of this format ({exc})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, SyntaxError, TypeError) as exc:
        raise ValueError(f"{where}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    return arrays


def read_index(directory):
    """The checked ``checkpoint.json`` of a checkpoint folder (its meta, models and weights entry), weights unread."""
    directory = Path(directory)
    index_path = directory / INDEX
    if not index_path.is_file():
        raise ValueError(f"{directory}: not a checkpoint (no {INDEX}); save one with 'rnnbackends train ... "
                         "--save DIR'")
    try:
        index = json.loads(read_inside(directory, INDEX, MAX_INDEX_BYTES).decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{index_path}: not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{index_path}: not valid JSON ({str(exc)[:100]})") from None
    check_index(index, index_path)
    return index


def read(directory):
    """(index dict, host arrays dict) of a checkpoint, checked for format and integrity; arrays load without pickle."""
    directory = Path(directory)
    index = read_index(directory)
    weights_path = directory / index["weights"]
    payload = read_inside(directory, index["weights"], MAX_WEIGHTS_BYTES)
    if hashlib.sha256(payload).hexdigest() != index["sha256"]:
        raise ValueError(f"{weights_path}: contents do not match the hash in {INDEX} (truncated or changed)")
    arrays = npz_arrays(payload, weights_path)
    for name, value in arrays.items():
        match = ARRAY_NAME.fullmatch(name)
        owners = index["models"] if match is None or match[1] == "model" else index["optimizers"]
        if match is None or int(match[2]) >= len(owners):
            raise ValueError(f"{weights_path}: array {name!r} belongs to no model or optimiser in {INDEX}")
        if match[1] == "optimizer":                                    # slots: model{i}/{param}/{slot}
            param = f"model{match[2]}/{match[3].rsplit('/', 1)[0]}"
            if param not in arrays or arrays[param].shape != value.shape:
                raise ValueError(f"{weights_path}: optimiser array {name!r} matches no parameter of model {match[2]}")
    for i in range(len(index["optimizers"])):                           # every parameter has the same slots, or none
        slots = {}
        for name in arrays:
            if name.startswith(f"optimizer{i}/"):
                param, slot = name[len(f"optimizer{i}/"):].rsplit("/", 1)
                slots.setdefault(param, set()).add(slot)
        params = {name[len(f"model{i}/"):] for name in arrays if name.startswith(f"model{i}/")}
        if slots and (set(slots) != params or len({frozenset(s) for s in slots.values()}) != 1):
            raise ValueError(f"{weights_path}: the state of optimiser {i} does not cover every parameter of model {i}")
    return index, arrays


def build(described, arrays, i, backend, where):
    """Model ``i`` rebuilt from its class and config (checked first), on ``backend``, without its weights yet."""
    name, config = described["class"], described["config"]
    if name not in model_classes.MODELS:
        raise ValueError(f"{where}: unknown model class {name!r}; known: {', '.join(model_classes.MODELS)}")
    accepted = set(inspect.signature(model_classes.MODELS[name]).parameters) - set(NOT_CONFIG)
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ValueError(f"{where}: models[{i}] ({name}) has no setting {', '.join(map(repr, unknown))}")
    own = [v for k, v in arrays.items() if k.startswith(f"model{i}/")]
    largest = max([len(own), *(d for v in own for d in v.shape)])    # no size in a config exceeds a saved one
    for key, value in config.items():
        if type(value) is int and not 0 <= value <= largest:
            raise ValueError(f"{where}: models[{i}].config.{key} = {value} is negative or larger than any saved "
                             "array allows")
    try:
        return model_classes.build_model(name, config, backend=backend, dtype=described["dtype"])
    except Exception as exc:                                           # noqa: BLE001 - untrusted config
        raise ValueError(f"{where}: models[{i}] ({name}) cannot be built from its config: {exc}") from None


def load(directory, backend=None, task=None, classes=None):
    """(models, meta): every saved model rebuilt on ``backend`` (any backend) with its weights, and the meta dict.

    ``task`` (a task name) and ``classes`` (model class names) refuse checkpoints of another task or model kind.
    """
    index, arrays = read(directory)
    where = Path(directory) / INDEX
    if task is not None and index["meta"].get("task") != task:
        raise ValueError(f"{directory}: a checkpoint of {index['meta'].get('task')!r}, not of the {task} task")
    models = []
    for i, described in enumerate(index["models"]):
        if classes is not None and described["class"] not in classes:
            raise ValueError(f"{directory}: holds a {described['class']}, not a {' or '.join(classes)}")
        model = build(described, arrays, i, backend, where)
        prefix = f"model{i}/"
        saved = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        expected = {k: v.shape for k, v in model.state_dict().items()}
        if set(saved) != set(expected):
            missing, unexpected = sorted(set(expected) - set(saved))[:4], sorted(set(saved) - set(expected))[:4]
            raise ValueError(f"{where}: the weights of models[{i}] do not fit its config: missing {missing}, "
                             f"unexpected {unexpected}")
        for key, shape in expected.items():
            if saved[key].shape != shape:
                raise ValueError(f"{where}: models[{i}] {key} has shape {saved[key].shape}; its config needs {shape}")
        model.load_state_dict(saved)
        model.eval()
        models.append(model)
    return models, index["meta"]


def load_optimizer_states(directory, optimizers, xp):
    """Restore the saved states into ``optimizers`` (the same classes, in the same order) for resuming."""
    index, arrays = read(directory)
    for i, (saved, optimizer) in enumerate(zip(index["optimizers"], optimizers, strict=False)):
        if saved["class"] != type(optimizer).__name__:
            raise ValueError(f"checkpoint optimiser {i} is {saved['class']}, not {type(optimizer).__name__}")
        prefix = f"optimizer{i}/"
        state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        optimizer.load_state_dict({"iterations": saved["iterations"], "arrays": state}, xp)
