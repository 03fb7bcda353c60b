"""Checkpoint fuzzing: random damage to a valid checkpoint ends in one clear ValueError or in the file's own weights.

Each case copies a valid checkpoint (a classifier and its Adam state), applies one seeded mutation (a JSON field
deleted, retyped or changed; the JSON replaced; the weights truncated, byte-flipped, re-typed, reshaped, swapped,
compressed; the weights file replaced by a symlink, FIFO or folder) and, half of the time, fixes up the weights'
hash, file name and index checksum the way a careful forger would. Then ``load`` and ``load_optimizer_states``
must either raise one single-line ValueError, or return exactly the weights the (mutated) file holds, in the
shapes the config needs; never another exception, never more than a few seconds.
"""
import hashlib
import io
import json
import os
import random
import shutil
import signal
import time
from collections import Counter

import numpy as np
import pytest

from rnnbackends import checkpoint
from rnnbackends.models import SequenceClassifier
from rnnbackends.optimizers import Adam

CASES, SEED, SECONDS_PER_CASE = 600, 20260101, 5
ODD_VALUES = [None, True, False, 0, -1, 1, 7, 10**9, 10**30, -(10**12), 1e308, float("nan"), 0.5, "", "x",
              "../../etc/hostname", "/dev/zero", "weights-0000000000000000.npz", [], {}, [1, 2], {"a": 1}, [[[]]],
              "\u00e9\u0000"]


class Hang(Exception):
    """A case ran longer than SECONDS_PER_CASE."""


def valid_checkpoint(folder):
    """A classifier after one Adam step (random gradients), saved with its optimiser state."""
    model = SequenceClassifier(12, 2, embed_dim=4, hidden_size=5, bidirectional=True, pooling="mean",
                               backend="numpy", seed=0)
    optimizer = Adam(0.01)
    rng = np.random.default_rng(0)
    optimizer.step(model.params, {k: rng.normal(size=p.shape).astype(p.dtype) for k, p in model.params.items()})
    checkpoint.save(folder, model, {"task": "sentiment", "vocabulary": [f"w{i}" for i in range(12)]}, optimizer)


def paths(value, prefix=()):
    """Every (path, value) inside nested dicts and lists."""
    yield prefix, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from paths(inner, prefix + (key,))


def set_at(root, path, value):
    """``root`` with the item at ``path`` replaced (``DELETE`` removes it)."""
    if not path:
        return value
    parent = root
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return root


DELETE = object()


def npz(arrays, compressed=False):
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def raw_arrays(payload):
    """The arrays of an npz as NumPy itself reads them (pickle off)."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def mutate(rng, index, payload, arrays):
    """(kind, new index or raw JSON text, new weights bytes or None, file action or None)."""
    kind = rng.choice(["json-delete", "json-retype", "json-number", "json-relabel", "json-replace", "truncate",
                       "flip", "swap", "dtype", "reshape", "drop-add", "compress", "append", "file"])
    if kind.startswith("json"):
        index = json.loads(json.dumps(index))
        spots = [p for p, _ in paths(index) if p and p[-1] != "checksum"]
        if kind == "json-delete":
            return kind, set_at(index, rng.choice(spots), DELETE), None, None
        if kind == "json-retype":
            return kind, set_at(index, rng.choice(spots), rng.choice(ODD_VALUES)), None, None
        if kind == "json-number":
            numbers = [p for p, v in paths(index) if type(v) is int and p[-1] != "checksum"]
            path = rng.choice(numbers)
            value = dict(paths(index))[path]
            changed = rng.choice([value + 1, value - 1, value * 1000, -value, 2**63])
            return kind, set_at(index, path, changed), None, None
        if kind == "json-relabel":
            index["meta"]["task"] = rng.choice(["translation", "textgen", "tagging", "timeseries", "speech"])
            return kind, index, None, None
        text = json.dumps(index)
        return kind, rng.choice([json.dumps([index]), '"checkpoint"', "42", "null", text[:rng.randrange(len(text))],
                                 "[" * 100_000, text.replace('"', "'", 3), "\udcff"]), None, None
    if kind == "truncate":
        return kind, index, payload[:rng.randrange(len(payload))], None
    if kind == "flip":
        data = bytearray(payload)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return kind, index, bytes(data), None
    names = sorted(arrays)
    if kind == "swap":
        a, b = rng.sample(names, 2)
        return kind, index, npz({**arrays, a: arrays[b], b: arrays[a]}), None
    if kind == "dtype":
        name, dtype = rng.choice(names), rng.choice([np.int8, np.int64, np.float16, np.complex64, np.bool_, "U3"])
        return kind, index, npz({**arrays, name: arrays[name].astype(dtype)}), None
    if kind == "reshape":
        name = rng.choice(names)
        value = arrays[name]
        changed = rng.choice([value.T, value.reshape(-1), value[..., None], value[:1], np.asfortranarray(value),
                              value.astype(">f4" if value.dtype == np.float32 else ">f8")])
        return kind, index, npz({**arrays, name: changed}), None
    if kind == "drop-add":
        changed = dict(arrays)
        if rng.random() < 0.5:
            del changed[rng.choice(names)]
        else:
            changed[rng.choice(["model0/extra.w", "model3/rnn.w_x", "optimizer0/ghost/m", "x"])] = np.zeros(3,
                                                                                                         np.float32)
        return kind, index, npz(changed), None
    if kind == "compress":
        return kind, index, npz(arrays, compressed=True), None
    if kind == "append":
        return kind, index, payload + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))), None
    return kind, index, None, rng.choice(["symlink-dev-zero", "symlink-outside", "fifo", "folder", "missing"])


def apply(folder, original_index, kind, index, payload, action, fix_up, outside):
    """Write the mutated checkpoint into ``folder``; returns the weights bytes it now names (or None)."""
    weights = folder / original_index["weights"]
    if payload is not None:
        weights.unlink()
        if fix_up:
            index = dict(index, sha256=hashlib.sha256(payload).hexdigest())
            index["weights"] = f"weights-{index['sha256'][:16]}.npz"
        (folder / index["weights"]).write_bytes(payload)
    if action is not None:
        weights.unlink()
        if action == "symlink-dev-zero":
            weights.symlink_to("/dev/zero")
        elif action == "symlink-outside":
            weights.symlink_to(outside)
        elif action == "fifo":
            os.mkfifo(weights)
        elif action == "folder":
            weights.mkdir()
    if isinstance(index, str):
        (folder / checkpoint.INDEX).write_text(index, encoding="utf-8", errors="surrogatepass")
        return None
    if fix_up and isinstance(index, dict):
        index["checksum"] = checkpoint.checksum(index)
    (folder / checkpoint.INDEX).write_text(json.dumps(index))
    named = index.get("weights") if isinstance(index, dict) else None
    path = folder / named if isinstance(named, str) and "/" not in named and "\x00" not in named else None
    return path.read_bytes() if path is not None and path.is_file() and not path.is_symlink() else None


def on_alarm(signum, frame):
    raise Hang()


@pytest.mark.skipif(not hasattr(signal, "SIGALRM") or not hasattr(os, "mkfifo"), reason="needs POSIX signals, FIFOs")
def test_random_damage_never_escapes_as_anything_but_one_clear_error(tmp_path):
    original = tmp_path / "original"
    valid_checkpoint(original)
    index = json.loads((original / checkpoint.INDEX).read_text())
    payload = (original / index["weights"]).read_bytes()
    arrays = raw_arrays(payload)
    shapes = {k: v.shape for k, v in arrays.items()}
    outside = tmp_path / "outside.npz"
    outside.write_bytes(payload)
    checkpoint.load(original)                                       # the backend's one-time start-up, not timed
    rng = random.Random(SEED)
    outcomes, failures, slowest = Counter(), [], 0.0
    previous = signal.signal(signal.SIGALRM, on_alarm)
    started = time.perf_counter()
    try:
        for case in range(CASES):
            folder = tmp_path / f"case{case}"
            shutil.copytree(original, folder)
            kind, new_index, new_payload, action = mutate(rng, index, payload, arrays)
            fix_up = rng.random() < 0.5
            named = apply(folder, index, kind, new_index, new_payload, action, fix_up, outside)
            signal.alarm(SECONDS_PER_CASE)
            begun = time.perf_counter()
            try:
                (model,), meta = checkpoint.load(folder, task="sentiment", classes=("SequenceClassifier",))
                optimizer = Adam(0.01)
                checkpoint.load_optimizer_states(folder, [optimizer], np)
                loaded = model.state_dict()
                truth = raw_arrays(named)                           # what the file holds, read by NumPy itself
                same = all(np.array_equal(loaded[k], arrays[f"model0/{k}"]) for k in loaded)
                assert all(loaded[k].shape == shapes[f"model0/{k}"] for k in loaded), "wrong shapes loaded"
                assert all(np.array_equal(loaded[k], truth[f"model0/{k}"]) for k in loaded), "not the file's weights"
                assert same or fix_up, "changed weights loaded without a fixed-up hash"
                outcomes["loaded the original weights" if same else "loaded the (forged) file's own weights"] += 1
            except ValueError as exc:
                assert "\n" not in str(exc) and str(exc), f"not one line: {exc!r}"
                outcomes["refused: one ValueError line"] += 1
            except (Exception, Hang) as exc:                        # noqa: BLE001 - the finding
                failures.append(f"case {case} {kind} fix_up={fix_up} action={action}: {type(exc).__name__}: {exc}")
            finally:
                signal.alarm(0)
                slowest = max(slowest, time.perf_counter() - begun)
            shutil.rmtree(folder)
    finally:
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - started
    print(f"\ncheckpoint fuzz: {CASES} cases in {seconds:.1f} s (slowest load {slowest * 1000:.0f} ms): "
          + ", ".join(f"{n} {what}" for what, n in outcomes.most_common()))
    assert not failures, "\n".join(failures[:10])
    assert sum(outcomes.values()) == CASES and slowest < SECONDS_PER_CASE and seconds < 120
    assert outcomes["refused: one ValueError line"] > CASES // 2
