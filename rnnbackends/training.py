"""Training: the epoch loop (``fit``) with best-weights tracking and early stopping, and ``train_members``, the one
driver every task uses, which adds the ``--save`` checkpoints and ``--resume`` for a model or an ensemble.

A run saved to ``save`` keeps, for each member (the model of a one-model task, or each model of an ensemble), the
best weights so far (by the validation metric) in the member's folder and the state after the latest finished
epoch (weights, optimiser state, history, random generators) in its ``last`` sub-folder. The member's folder is
``save`` itself for a one-model task (so ``predict`` can use it while training goes on) and ``save/member-K`` in an
ensemble. ``resume=True`` continues every member from its ``last``: members that finished are loaded, the
interrupted one goes on from its last finished epoch, and the rest train as usual, so a resumed run repeats the
uninterrupted one on CPU backends.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import checkpoint, distributed
from .layers import computing_on
from .optimizers import clip_grad_value, clip_scale, global_norm


def log_to_stderr(line):
    """Print one log line without breaking a progress bar."""
    tqdm.write(line, file=sys.stderr)


def epoch_rng(seed, epoch):
    """The generator that shuffles (and drops out words of) epoch ``epoch``: the same with or without a resume."""
    return np.random.default_rng([seed, epoch])


def fingerprint(*parts):
    """A SHA-256 of strings, numbers, NumPy arrays and (nested) lists of them: what a resumed run must share."""
    digest = hashlib.sha256()

    def feed(part):
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (list, tuple)):
            digest.update(f"[{len(part)}".encode())
            for item in part:
                feed(item)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    feed(list(parts))
    return digest.hexdigest()


def train_step(model, loss_fn, optimizer, batch, clip_norm=None, clip_value=None, communicator=None):
    """One forward, backward and update on ``batch``; returns the loss. With a ``communicator`` of N ranks each
    computes its block of the batch's rows and the gradients are summed (rnnbackends.distributed). The loss and the
    optimiser use the model's backend's front-end kernels where it offers them (``computing_on``); clipping by
    global norm scales the gradients inside the optimiser's update."""
    with computing_on(model.backend):
        if communicator is not None and communicator.size > 1:
            loss, grads = distributed.global_batch_gradients(communicator, model, loss_fn, batch)
        else:
            logits = model.forward(*batch.inputs)
            loss, d_logits = loss_fn(logits, batch.targets, batch.mask)
            model.backward(d_logits)
            grads = model.grads
        if clip_value is not None:
            clip_grad_value(grads, clip_value)
        scale = 1.0 if clip_norm is None else clip_scale(global_norm(grads), clip_norm)
        optimizer.step(model.params, grads, scale)
    return loss


def improves(value, best, higher_is_better):
    """Whether ``value`` is strictly better than ``best`` (None: nothing yet)."""
    return best is None or (value > best if higher_is_better else value < best)


def fit(model, loss_fn, optimizer, train_batches, *, epochs=10, validate=None, monitor="val_loss",
        higher_is_better=False, patience=None, restore_best=True, clip_norm=None, clip_value=None,
        start_epoch=0, history=None, best=None, best_state=None, on_improvement=None, on_epoch_end=None,
        lr_decay=None, progress=True, log=log_to_stderr, description="train", communicator=None):
    """Train for up to ``epochs`` epochs; returns the history, a list of one dict per epoch.

    ``train_batches(epoch)`` gives that epoch's list of Batches; ``validate(model)`` (run in eval mode) gives a
    dict of metrics such as ``{"val_loss": ..., "val_accuracy": ...}``. The best epoch by ``monitor`` is tracked
    here: ``on_improvement(epoch, record)`` runs when it improves, with ``patience`` training stops after that many
    epochs without improvement, with ``lr_decay`` the optimiser's learning rate is multiplied by it after every
    epoch that does not improve (reduce on plateau), and with ``restore_best`` the best weights come back at the
    end. To continue a run, pass ``start_epoch`` and the earlier ``history``, ``best`` record and ``best_state``
    weights. A stateful model's carried state is reset at the start of every epoch. ``on_epoch_end(epoch, record)``
    runs after each epoch (e.g. to save a checkpoint).

    Under ``mpiexec -n N`` (or with a ``communicator``) training is data-parallel: every rank starts from rank 0's
    weights and optimiser state, computes its block of each batch's rows and applies the same summed update;
    rank 0 alone validates (the others receive its record), logs and shows progress.
    """
    communicator = distributed.current() if communicator is None else communicator
    if communicator.size > 1:
        distributed.share_weights(communicator, model)
        distributed.share_optimizer(communicator, optimizer, model.xp)
        progress, log = progress and communicator.rank == 0, log if communicator.rank == 0 else None
    history = [] if history is None else history                          # appended to in place
    best = dict(best) if best else None
    for epoch in range(start_epoch, epochs):
        if patience is not None and best is not None and epoch - best["epoch"] >= patience:
            if log is not None:
                log(f"{description}: early stop, best {monitor} {best[monitor]:.4f} at epoch {best['epoch']}")
            break
        started = time.perf_counter()
        model.train()
        if getattr(model, "stateful", False):
            model.reset_state()
        total, count = 0.0, 0
        bar = tqdm(train_batches(epoch), desc=f"{description} epoch {epoch + 1}/{epochs}", leave=False,
                   disable=None if progress else True, file=sys.stderr)          # None: only on a terminal
        for batch in bar:
            total += train_step(model, loss_fn, optimizer, batch, clip_norm, clip_value, communicator)
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        trained = time.perf_counter() - started
        record = {"epoch": epoch + 1, "loss": total / max(count, 1), "train_seconds": trained,
                  "step_ms": 1e3 * trained / max(count, 1), "lr": optimizer.lr}
        if validate is not None:
            model.eval()
            record.update(distributed.on_root(communicator, lambda: validate(model)))
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if log is not None:
            log(f"{description} epoch {epoch + 1:3d}: " + "  ".join(
                f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if monitor in record and improves(record[monitor], best and best[monitor], higher_is_better):
            best = dict(record)
            best_state = model.state_dict() if restore_best else None
            if on_improvement is not None:
                on_improvement(epoch, record)
        elif monitor in record and lr_decay is not None:
            optimizer.lr *= lr_decay                                      # a plateau: smaller steps from now on
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


@dataclass
class Member:
    """One model of a run: its optimiser, its batches per epoch, and the generators a resume must restore."""

    model: object
    optimizer: object
    batches: object                                  # epoch -> list of Batches
    rngs: list = field(default_factory=list)        # generators besides model.rng (e.g. a shuffling one)


@dataclass
class Run:
    """What ``train_members`` returns: the trained models (best weights loaded), one history and best record each."""

    models: list
    histories: list
    bests: list


def member_folder(save, index, members):
    """Where member ``index`` keeps its best weights: ``save`` for one model, ``save/member-K`` in an ensemble."""
    return Path(save) if members == 1 else Path(save) / f"member-{index}"


def clear_previous_run(save):
    """Remove the resumable state an earlier run left in ``save`` (only this project's checkpoint folders)."""
    save = Path(save)
    for folder in [save / "last", *save.glob("member-*")]:
        if (folder / checkpoint.INDEX).is_file() or (folder / "last" / checkpoint.INDEX).is_file():
            shutil.rmtree(folder)


def read_last(folder, print_name):
    """The ``training`` record of ``folder/last`` and its meta, or None when there is none."""
    if not (folder / "last" / checkpoint.INDEX).is_file():
        return None
    index, _ = checkpoint.read(folder / "last")
    meta = index.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("training"), dict):
        raise ValueError(f"{folder / 'last'}: not the state of an interrupted run of {print_name}")
    return meta


def train_members(members, loss_fn, validate, *, epochs, meta, data_fingerprint, save=None, resume=False,
                  monitor="val_loss", higher_is_better=False, patience=None, clip_norm=None, lr_decay=None,
                  progress=True, log=None, description="train", communicator=None):
    """Train each member with ``fit``; save best and last checkpoints under ``save``; resume from them.

    ``validate(model)`` gives a dict holding ``monitor``; ``meta`` is what the saved checkpoints carry for
    prediction (``task``, vocabularies, ...); ``data_fingerprint`` (see ``fingerprint``) identifies the training
    data, vocabulary, seed and options, and ``resume`` refuses a run saved with another. Returns a ``Run`` whose
    models hold their best weights, in eval mode. Under ``mpiexec -n N`` (see ``fit``) rank 0 alone reads and
    writes ``save`` and logs; the other ranks continue from the state it sends them.
    """
    communicator = distributed.current() if communicator is None else communicator
    if communicator.rank != 0:
        save, resume, progress, log = None, False, False, None
    task = meta.get("task", "this task")
    if resume and save is None:
        raise ValueError("--resume needs --save DIR (the folder of the interrupted run)")
    if resume and read_last(member_folder(save, 0, len(members)), task) is None:
        raise ValueError(f"--resume: {save} holds no interrupted run of {task} (no finished epoch); "
                         "train without --resume")
    if save is not None and not resume:
        clear_previous_run(save)
    run = Run([], [], [])
    for index, member in enumerate(members):
        model, optimizer = member.model, member.optimizer
        rngs = [model.rng, *member.rngs]
        name = description if len(members) == 1 else f"{description} model {index + 1}/{len(members)}"
        folder = None if save is None else member_folder(save, index, len(members))
        history, best, best_state, start_epoch = [], None, None, 0
        last = read_last(folder, task) if resume else None
        if last is not None:
            if last.get("fingerprint") != data_fingerprint:
                raise ValueError(f"--resume: the data, vocabulary, seed or options differ from the run saved in "
                                 f"{save}; use the same command as that run, or train without --resume")
            saved, _ = checkpoint.load(folder / "last", model.backend)
            model.load_state_dict(saved[0].state_dict())
            checkpoint.load_optimizer_states(folder / "last", [optimizer], model.xp)
            state = last["training"]
            start_epoch, history, best = state["epoch"], state["history"], state["best"]
            optimizer.lr = state.get("lr", optimizer.lr)
            for rng, saved_state in zip(rngs, state["rngs"]):
                rng.bit_generator.state = saved_state
            if best is not None:
                best_state = checkpoint.load(folder, model.backend)[0][0].state_dict()
            if log is not None and start_epoch < epochs:
                log(f"{name}: resuming after epoch {start_epoch} from {folder / 'last'}")
        if communicator.size > 1:
            state, best_state = distributed.share_run(communicator, model, optimizer, rngs, {
                "epoch": start_epoch, "history": history, "best": best}, best_state)
            start_epoch, history, best = state["epoch"], state["history"], state["best"]

        tracked = {"best": best}

        def save_best(epoch, record, folder=folder, tracked=tracked, model=model):
            """The best model so far, usable for prediction while training goes on."""
            tracked["best"] = dict(record)
            if folder is not None:
                checkpoint.save(folder, model, {**meta, "epoch": epoch + 1, "validation": record})

        def save_last(epoch, record, folder=folder, tracked=tracked, history=history, rngs=rngs, model=model,
                      optimizer=optimizer):
            """The state after this epoch, for --resume."""
            if folder is not None:
                training = {"epoch": epoch + 1, "history": history, "best": tracked["best"], "lr": optimizer.lr,
                            "rngs": [rng.bit_generator.state for rng in rngs]}
                checkpoint.save(folder / "last", model, {**meta, "fingerprint": data_fingerprint,
                                                         "training": training}, optimizer)

        fit(model, loss_fn, optimizer, member.batches, epochs=epochs, validate=validate, monitor=monitor,
            higher_is_better=higher_is_better, patience=patience, clip_norm=clip_norm, start_epoch=start_epoch,
            history=history, best=best, best_state=best_state, on_improvement=save_best, on_epoch_end=save_last,
            lr_decay=lr_decay, progress=progress, log=log, description=name, communicator=communicator)
        run.models.append(model)
        run.histories.append(history)
        run.bests.append(tracked["best"])
    return run
