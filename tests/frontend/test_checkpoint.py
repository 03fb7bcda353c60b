"""Checkpoints: round trip on every backend, no pickle, atomic replacement, resumable training."""
import json
import os

import numpy as np
import pytest

import rnnbackends
from rnnbackends import checkpoint, files
from rnnbackends.data import Batch, minibatches
from rnnbackends.layers import to_host
from rnnbackends.losses import mean_squared_error
from rnnbackends.models import Forecaster, SequenceClassifier
from rnnbackends.optimizers import Adam
from rnnbackends.training import fit

AVAILABLE = [b.name for b in rnnbackends.list_backends() if b.status == "available"]
IDS, LENGTHS = np.array([[2, 3, 4], [5, 6, 0], [7, 0, 0]]), np.array([3, 2, 1])


def classifier(seed=0, backend="numpy"):
    return SequenceClassifier(10, 2, embed_dim=4, hidden_size=5, bidirectional=True, pooling="mean",
                              backend=backend, seed=seed)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_round_trip_loads_on_every_backend(tmp_path, backend):
    models = [classifier(0), classifier(1)]
    checkpoint.save(tmp_path, models, {"task": "demo", "vocabulary": ["<pad>", "<unk>", "é"]})
    loaded, meta = checkpoint.load(tmp_path, backend)
    assert meta["vocabulary"][2] == "é" and len(loaded) == 2
    for original, copy in zip(models, loaded):
        assert copy.backend.name == backend and copy.config == original.config
        original.eval()
        np.testing.assert_allclose(to_host(copy.forward(IDS, LENGTHS)), to_host(original.forward(IDS, LENGTHS)),
                                   rtol=1e-5, atol=1e-6)
    index = json.loads((tmp_path / "checkpoint.json").read_text())
    with np.load(tmp_path / index["weights"], allow_pickle=False) as npz:   # no object arrays inside
        assert all(npz[name].dtype != object for name in npz.files)


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, classifier(0), {"task": "demo", "epoch": 1})
    before = sorted(os.listdir(tmp_path))

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(files.os, "fsync", crash)                 # dies while writing the new weights
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(tmp_path, classifier(1), {"task": "demo", "epoch": 2})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before                      # no half-written files left either
    real_replace = os.replace
    calls = []

    def crash_on_index(src, dst):                                      # weights written, index replace dies
        calls.append(dst)
        if str(dst).endswith("checkpoint.json"):
            raise OSError("power cut (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", crash_on_index)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(tmp_path, classifier(1), {"task": "demo", "epoch": 2})
    monkeypatch.undo()
    models, meta = checkpoint.load(tmp_path)
    assert meta["epoch"] == 1
    for key, value in models[0].state_dict().items():
        np.testing.assert_array_equal(value, classifier(0).state_dict()[key])
    checkpoint.save(tmp_path, classifier(1), {"task": "demo", "epoch": 2})  # the next save cleans up
    assert meta != checkpoint.load(tmp_path)[1] and len(list(tmp_path.glob("weights-*.npz"))) == 1


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a checkpoint"):
        checkpoint.load(tmp_path)
    checkpoint.save(tmp_path, classifier(0), {"task": "demo"})
    weights = next(tmp_path.glob("weights-*.npz"))
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ValueError, match="do not match the hash"):
        checkpoint.load(tmp_path)


def test_resuming_from_a_checkpoint_continues_the_same_run(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 32, 1)), rng.normal(size=(32, 1))

    def batches(epoch):
        return [Batch((x[:, rows],), y[rows]) for rows in minibatches(32, 8, np.random.default_rng(epoch))]

    def run(model, optimizer, start, stop, save=None):
        return fit(model, mean_squared_error, optimizer, batches, epochs=stop, start_epoch=start, progress=False,
                   log=None, on_epoch_end=(lambda e, r: checkpoint.save(save, model, {"epoch": e + 1}, optimizer))
                   if save else None)

    straight = Forecaster(hidden_size=6, backend="numpy", dtype="float64")
    full = run(straight, Adam(0.01), 0, 6)
    first = Forecaster(hidden_size=6, backend="numpy", dtype="float64")
    run(first, Adam(0.01), 0, 3, save=tmp_path)
    (resumed,), meta = checkpoint.load(tmp_path)
    optimizer = Adam(0.01)
    checkpoint.load_optimizer_states(tmp_path, [optimizer], resumed.xp)
    rest = run(resumed, optimizer, meta["epoch"], 6)
    np.testing.assert_allclose([r["loss"] for r in rest], [r["loss"] for r in full[3:]], rtol=1e-12)
