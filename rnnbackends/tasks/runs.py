"""What the sequence tasks share: where the data lives, and training that can be interrupted and resumed.

A run saved to ``--save DIR`` keeps two checkpoints: ``DIR`` itself holds the best model so far (by the validation
metric, usable by ``predict``/``generate``/``translate`` while training goes on) and ``DIR/last`` the state after
the latest finished epoch (weights, optimiser state, history, dropout RNG). ``resume=True`` continues from
``DIR/last``; batches are shuffled by a generator seeded with (seed, epoch), so a resumed run repeats the
uninterrupted one exactly on CPU backends.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import checkpoint
from ..training import fit


def epoch_rng(seed, epoch):
    """The generator that shuffles (and drops out words of) epoch ``epoch``: the same with or without a resume."""
    return np.random.default_rng([seed, epoch])


def train_resumable(model, optimizer, loss_fn, batches, validate, *, epochs, save=None, resume=False, meta=None,
                    monitor="val_loss", higher_is_better=False, clip_norm=None, progress=True, log=None,
                    description="train"):
    """``fit`` for ``epochs`` epochs with best/last checkpoints under ``save``; returns (history, best record).

    ``batches(epoch)`` gives the epoch's Batches, ``validate(model)`` a dict holding ``monitor``, ``meta`` what the
    saved checkpoints carry for prediction (vocabularies, task name). Ends with the best weights loaded.
    """
    meta = dict(meta or {})
    last = None if save is None else Path(save) / "last"
    history, best, start_epoch = [], None, 0
    if resume:
        if last is None:
            raise ValueError("--resume needs --save DIR (the folder of the interrupted run)")
        if (last / checkpoint.INDEX).is_file():
            saved, saved_meta = checkpoint.load(last, model.backend)
            model.load_state_dict(saved[0].state_dict())
            checkpoint.load_optimizer_states(last, [optimizer], model.xp)
            state = saved_meta["training"]
            start_epoch, history, best = state["epoch"], state["history"], state["best"]
            model.rng.bit_generator.state = state["rng"]
            if log is not None:
                log(f"{description}: resuming after epoch {start_epoch} from {last}")
    best_state = None

    def on_epoch_end(epoch, record):
        """Save the best model when the monitored metric improves, and the resumable state every epoch."""
        nonlocal best, best_state
        history.append(record)
        value = record[monitor]
        if best is None or (value > best[monitor] if higher_is_better else value < best[monitor]):
            best = dict(record)
            best_state = model.state_dict()
            if save is not None:
                checkpoint.save(save, model, {**meta, "epoch": epoch + 1, "validation": record})
        if last is not None:
            training = {"epoch": epoch + 1, "history": history, "best": best,
                        "rng": model.rng.bit_generator.state}
            checkpoint.save(last, model, {**meta, "training": training}, optimizer)

    fit(model, loss_fn, optimizer, batches, epochs=epochs, validate=validate, monitor=monitor,
        higher_is_better=higher_is_better, restore_best=False, clip_norm=clip_norm, start_epoch=start_epoch,
        on_epoch_end=on_epoch_end, progress=progress, log=log, description=description)
    if best_state is not None:
        model.load_state_dict(best_state)
    elif save is not None and (Path(save) / checkpoint.INDEX).is_file():   # the best epoch came before the resume
        model.load_state_dict(checkpoint.load(save, model.backend)[0][0].state_dict())
    model.eval()
    return history, best
