"""Checkpoints: round trip on every backend, no pickle, atomic replacement, resumable training, hostile files."""
import hashlib
import io
import json
import os
import stat
import zipfile

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


def saved(tmp_path):
    """A saved one-model checkpoint folder and its index."""
    folder = tmp_path / "ckpt"
    checkpoint.save(folder, classifier(0), {"task": "demo", "vocabulary": ["<pad>", "<unk>"]})
    return folder, json.loads((folder / checkpoint.INDEX).read_text())


def rewrite(folder, index, payload=None):
    """Write ``index`` (and new weights ``payload``) as a careful forger would: hash, file name and checksum fixed."""
    if payload is not None:
        for old in folder.glob("weights-*.npz"):
            old.unlink()
        index["sha256"] = hashlib.sha256(payload).hexdigest()
        index["weights"] = f"weights-{index['sha256'][:16]}.npz"
        (folder / index["weights"]).write_bytes(payload)
    if isinstance(index, dict):
        index["checksum"] = checkpoint.checksum(index)
    (folder / checkpoint.INDEX).write_text(json.dumps(index))


def npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def refused(folder, match, **kwargs):
    """Loading ``folder`` raises one ValueError line matching ``match``."""
    with pytest.raises(ValueError, match=match) as error:
        checkpoint.load(folder, **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["/dev/zero", "../../x.npz", "/etc/hostname", "sub/weights-0123456789abcdef.npz",
                                  "weights-0123456789abcdef.npz\x00", 12, None])
def test_the_weights_entry_must_be_a_bare_file_name_in_the_folder(tmp_path, name):
    folder, index = saved(tmp_path)
    index["weights"] = name
    rewrite(folder, index)
    refused(folder, "'weights'")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks (POSIX)")
def test_a_weights_symlink_out_of_the_folder_or_a_fifo_is_refused_without_reading_it(tmp_path):
    folder, index = saved(tmp_path)
    weights = folder / index["weights"]
    weights.unlink()
    weights.symlink_to("/dev/zero")
    refused(folder, "points outside the checkpoint folder")
    weights.unlink()
    os.mkfifo(weights)                                           # opening it for reading would block
    refused(folder, "not a regular file")
    weights.unlink()
    (folder / "real.npz").write_bytes(b"x")
    weights.symlink_to("real.npz")                               # a symlink inside the folder is fine to follow
    refused(folder, "do not match the hash")


def test_an_oversized_weights_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    folder, _ = saved(tmp_path)
    monkeypatch.setattr(checkpoint, "MAX_WEIGHTS_BYTES", 1000)
    refused(folder, "more than a checkpoint holds")


@pytest.mark.parametrize("edit, match", [
    (lambda index: [index], "a JSON list, not an object"),
    (lambda index: {k: v for k, v in index.items() if k != "weights"}, "'weights' is missing"),
    (lambda index: {k: v for k, v in index.items() if k != "meta"}, "'meta' is missing"),
    (lambda index: {**index, "meta": ["task", "demo"]}, "'meta' is not a dict"),
    (lambda index: {**index, "version": 1}, "version 1, this rnnbackends reads version 2"),
    (lambda index: {**index, "models": [{**index["models"][0], "dtype": "int8"}]}, "dtype"),
    (lambda index: {**index, "models": [{**index["models"][0], "class": "Unpickler"}]}, "unknown model class"),
])
def test_malformed_indexes_are_one_clear_line(tmp_path, edit, match):
    folder, index = saved(tmp_path)
    rewrite(folder, edit(index))
    refused(folder, match)


def test_a_relabelled_task_is_caught_by_the_checksum_or_by_the_loading_task(tmp_path):
    folder, index = saved(tmp_path)
    text = (folder / checkpoint.INDEX).read_text().replace('"task": "demo"', '"task": "translation"')
    (folder / checkpoint.INDEX).write_text(text)                 # a hand edit
    refused(folder, "edited after it was saved")
    index["meta"]["task"] = "translation"
    rewrite(folder, index)                                        # a forger who recomputes the checksum
    refused(folder, "holds a SequenceClassifier, not a EncoderDecoder", task="translation", classes=("EncoderDecoder",))
    refused(folder, "a checkpoint of 'translation', not of the textgen task", task="textgen")


def test_truncated_weights_with_a_fixed_up_hash_are_refused(tmp_path):
    folder, index = saved(tmp_path)
    payload = (folder / index["weights"]).read_bytes()
    for cut in (10, len(payload) // 2, len(payload) - 30):
        rewrite(folder, dict(index), payload[:cut])
        refused(folder, "not a readable .npz|not a weights file")


def test_weights_must_be_float_arrays_of_the_configs_shapes(tmp_path):
    folder, index = saved(tmp_path)
    arrays = checkpoint.read(folder)[1]
    as_int8 = {k: v.astype(np.int8) for k, v in arrays.items()}
    rewrite(folder, dict(index), npz_bytes(as_int8))
    refused(folder, "int8, not float32 or float64")
    name = next(k for k, v in arrays.items() if v.ndim == 2 and v.shape[0] != v.shape[1])
    rewrite(folder, dict(index), npz_bytes({**arrays, name: np.ascontiguousarray(arrays[name].T)}))
    refused(folder, "has shape .* its config needs")
    rewrite(folder, dict(index), npz_bytes({k: v for k, v in arrays.items() if k != name}))
    refused(folder, "do not fit its config")
    compressed = io.BytesIO()
    np.savez_compressed(compressed, **arrays)                    # a zip bomb would hide in compression
    rewrite(folder, dict(index), compressed.getvalue())
    refused(folder, "not a stored .npy array")
    twice = io.BytesIO(npz_bytes(arrays))
    with zipfile.ZipFile(twice, "a") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr(f"{name}.npy", io.BytesIO(npz_bytes({name: arrays[name] * 2})).getvalue()[-100:])
    rewrite(folder, dict(index), twice.getvalue())
    refused(folder, "stored twice")


@pytest.mark.parametrize("key, value, match", [("hidden_size", 10**12, "larger than any saved array allows"),
                                               ("hidden_size", 6, "has shape"),
                                               ("hidden_size", "5", "cannot be built"),
                                               ("rm_rf", 1, "has no setting 'rm_rf'"),
                                               ("pooling", ["mean"], "not a number or text")])
def test_configs_are_checked_before_a_model_is_built(tmp_path, key, value, match):
    folder, index = saved(tmp_path)
    index["models"][0]["config"][key] = value
    rewrite(folder, index)
    refused(folder, match)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_files_get_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        checkpoint.save(tmp_path, classifier(0), {"task": "demo"})
        files.write_atomically(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(previous)
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_read_index_checks_the_index_without_reading_the_weights(tmp_path):
    folder, index = saved(tmp_path)
    (folder / index["weights"]).unlink()
    assert checkpoint.read_index(folder)["meta"]["task"] == "demo"
    refused(folder, "missing; the checkpoint is incomplete")


@pytest.mark.parametrize("damage", ["dev-zero", "outside", "list", "no-meta", "relabel", "truncated", "int8"])
def test_predict_on_a_damaged_checkpoint_exits_2_with_one_line(tmp_path, monkeypatch, capsys, damage):
    from rnnbackends import cli
    from rnnbackends.data import PAD, UNK, Tokenizer
    vocabulary = [PAD, UNK, "good", "bad", "food"]
    model = SequenceClassifier(len(vocabulary), 2, embed_dim=4, hidden_size=5, backend="numpy", seed=0)
    folder = tmp_path / "ckpt"
    checkpoint.save(folder, [model], {"task": "sentiment", "tokenizer": Tokenizer().config(), "vocabulary": vocabulary})
    monkeypatch.setattr("sys.stdin", io.StringIO("good food\n"))
    assert cli.main(["predict", "--checkpoint", str(folder), "--backend", "numpy"]) == 0
    assert capsys.readouterr().out.startswith(("positive\t", "negative\t"))
    index = json.loads((folder / checkpoint.INDEX).read_text())
    weights = folder / index["weights"]
    if damage in ("dev-zero", "outside"):
        weights.unlink()
        weights.symlink_to("/dev/zero" if damage == "dev-zero" else tmp_path / "elsewhere.npz")
        (tmp_path / "elsewhere.npz").write_bytes(b"PK")
    elif damage == "list":
        rewrite(folder, [index])
    elif damage == "no-meta":
        rewrite(folder, {k: v for k, v in index.items() if k != "meta"})
    elif damage == "relabel":
        (folder / checkpoint.INDEX).write_text(json.dumps(index).replace('"task": "sentiment"', '"task": "tagging"'))
    elif damage == "truncated":
        rewrite(folder, dict(index), weights.read_bytes()[:-100])
    else:
        rewrite(folder, dict(index), npz_bytes({k: v.astype(np.int8) for k, v in checkpoint.read(folder)[1].items()}))
    monkeypatch.setattr("sys.stdin", io.StringIO("good food\n"))
    assert cli.main(["predict", "--checkpoint", str(folder), "--backend", "numpy"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
