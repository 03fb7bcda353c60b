"""The training loop: minibatches with a progress bar, clipping, validation, early stopping, a per-epoch log."""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from .optimizers import clip_grad_norm, clip_grad_value


def log_to_stderr(line):
    """Print one log line without breaking a progress bar."""
    tqdm.write(line, file=sys.stderr)


def train_step(model, loss_fn, optimizer, batch, clip_norm=None, clip_value=None):
    """One forward, backward and update on ``batch``; returns the loss."""
    logits = model.forward(*batch.inputs)
    loss, d_logits = loss_fn(logits, batch.targets, batch.mask)
    model.backward(d_logits)
    grads = model.grads
    if clip_value is not None:
        clip_grad_value(grads, clip_value)
    if clip_norm is not None:
        clip_grad_norm(grads, clip_norm)
    optimizer.step(model.params, grads)
    return loss


def fit(model, loss_fn, optimizer, train_batches, *, epochs=10, validate=None, monitor="val_loss",
        higher_is_better=False, patience=None, restore_best=True, clip_norm=None, clip_value=None,
        start_epoch=0, on_epoch_end=None, progress=True, log=log_to_stderr, description="train"):
    """Train for up to ``epochs`` epochs; returns the history, a list of one dict per epoch.

    ``train_batches(epoch)`` gives that epoch's list of Batches; ``validate(model)`` (run in eval mode) gives a
    dict of metrics such as ``{"val_loss": ..., "val_accuracy": ...}``. With ``patience``, training stops after
    that many epochs without improvement of ``monitor``, and with ``restore_best`` the best weights come back.
    A stateful model's carried state is reset at the start of every epoch. ``on_epoch_end(epoch, record)``
    runs after each epoch (e.g. to save a checkpoint).
    """
    history, best, best_state, waited = [], None, None, 0
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        model.train()
        if getattr(model, "stateful", False):
            model.reset_state()
        total, count = 0.0, 0
        bar = tqdm(train_batches(epoch), desc=f"{description} epoch {epoch + 1}/{epochs}", leave=False,
                   disable=None if progress else True, file=sys.stderr)          # None: only on a terminal
        for batch in bar:
            total += train_step(model, loss_fn, optimizer, batch, clip_norm, clip_value)
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        record = {"epoch": epoch + 1, "loss": total / max(count, 1)}
        if validate is not None:
            model.eval()
            record.update(validate(model))
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if log is not None:
            log(f"{description} epoch {epoch + 1:3d}: " + "  ".join(
                f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if validate is None or monitor not in record:
            continue
        value = record[monitor]
        if best is None or (value > best if higher_is_better else value < best):
            best, waited = value, 0
            best_state = model.state_dict() if restore_best else None
        else:
            waited += 1
            if patience is not None and waited >= patience:
                if log is not None:
                    log(f"{description}: early stop, best {monitor} {best:.4f} at epoch "
                        f"{epoch + 1 - waited}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
