"""The end-to-end suite: every task's default model trained one step at a time, against the same model in PyTorch.

A step is what ``rnnbackends.training.train_step`` runs: forward, loss, backward, clipping by global norm and the
optimiser (Adam at the task's learning rate). Each task's model takes its options from the task module
(HYPERPARAMETERS, TRAINING, option defaults) and batches of the shapes its bundled data gives (``SHAPES``: vocabulary
sizes and padded lengths measured on the data, lengths within a fifth below the padded one where the task pads, as
its length buckets give). The PyTorch model has the same layers, sizes, dropout, loss, optimiser (torch.optim.Adam),
clipping (clip_grad_norm_), batch and threads. Per task and cell (rnn, gru, lstm) the backends and PyTorch run
interleaved, one step each in turn, and the medians are compared; each of our steps is split into the backend's
recurrent calls, the other layers, the loss and the optimiser (clipping included). Inference: ``predict``
sentences/s (sentiment and tagging, eval forward of 256 sentences with the probabilities or tags on the host) and
``generate`` characters/s (textgen, ``LanguageModel.generate``) against a PyTorch loop of the same model.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from perf import runner

PEER = "torch"
CELLS = ("rnn", "gru", "lstm")
TASKS = ("sentiment", "tagging", "textgen", "translation", "timeseries", "speech")
# Batch shapes of the bundled data (measured once on it): vocabularies, padded lengths of bucketed batches
# (sentiment: median sentence 12 words, 90th percentile 25; tagging: 14 and 31), the char model's BPTT chunk,
# Tatoeba pairs, the monthly series' window (2·12+1), speech: 1-7 digits (11 words), ~2.4 s padded, 40 mels.
SHAPES = {"sentiment": dict(V=4605, T=24), "tagging": dict(V=7437, T=24, K=17, chars=96, word_chars=20),
          "textgen": dict(V=67), "translation": dict(V_source=3826, V_target=4004, S=10, T=12),
          "timeseries": dict(T=25), "speech": dict(frames=240, F=40, K=11)}
SMALL = dict(B=4, T=6)                                   # --small: every task at this batch and length (tests)
TARGETS = {"numba_step": 1.5, "numba_geomean": 2.0, "numpy_step": 1.0, "outside_backend": 0.30,
           "inference": 2.0}
PREDICT_BATCH, GENERATE_LENGTH = 256, 200


def add_arguments(parser):
    """The end-to-end suite's options."""
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma list of tasks (default: {','.join(TASKS)})")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma list of cells (default: rnn,gru,lstm)")
    parser.add_argument("--backends", default="", help="comma list of our backends (default: numba and numpy, those "
                        "available)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for every impl: BLAS, numba and torch (default: all cores)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15, help="steps timed per impl, interleaved")
    parser.add_argument("--quick", action="store_true", help="5 repeats, no inference timings")
    parser.add_argument("--small", action="store_true", help=f"every task at B={SMALL['B']}, T={SMALL['T']} (tests)")
    return parser


def _names(text, known, what):
    """The comma list ``text`` checked against ``known``."""
    names = [n for n in text.split(",") if n]
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise SystemExit(f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    return names


# -- the cases: our model, its batch, and the same model in PyTorch -----------------------------------------------

class Case:
    """One task's default model on one backend: model, loss, optimiser, clipping and a batch."""

    def __init__(self, model, loss_fn, optimizer, batch, clip_norm):
        self.model, self.loss_fn, self.optimizer, self.batch, self.clip_norm = model, loss_fn, optimizer, batch, \
            clip_norm


# The options each model takes here, with the model's own default where a task leaves one out.
MODEL_OPTIONS = {"sentiment": dict(embed_dim=64, hidden_size=64, bidirectional=False, pooling="last", dropout=0.0,
                                   embed_dropout=0.0),
                 "tagging": dict(embed_dim=48, char_embed_dim=24, char_hidden_size=64, hidden_size=128, num_layers=1,
                                 dropout=0.0, embed_dropout=0.0),
                 "textgen": dict(embed_dim=64, hidden_size=128, num_layers=1, dropout=0.0),
                 "translation": dict(embed_dim=128, hidden_size=256, dropout=0.0),
                 "timeseries": dict(hidden_size=32),
                 "speech": dict(hidden_size=128, num_layers=3, bidirectional=True, stride=3, dropout=0.0)}


VARIANT = {"textgen": "char", "translation": "luong"}    # where a task keeps options per variant: the one timed
ALIASES = {"hidden": "hidden_size", "layers": "num_layers", "bptt": "steps"}      # task option -> model/TRAINING key


def task_options(task, cell="rnn"):
    """(the model's options, the training options) of a task's default run with ``cell``: its HYPERPARAMETERS,
    TRAINING and EMBED_DIM tables (the default variant's entry where they hold one per variant) over its per-cell
    defaults (SIMPLE_MODEL for the simple cell, GATED_MODEL for GRU and LSTM, where the task keeps them) over its
    options' defaults."""
    import importlib
    module = importlib.import_module(f"rnnbackends.tasks.{task}")

    def table(name):
        value = getattr(module, name, {})
        return value.get(VARIANT.get(task), value) if isinstance(value, dict) else value
    per_cell = getattr(module, "SIMPLE_MODEL" if cell == "rnn" else "GATED_MODEL", {})
    defaults = {**{ALIASES.get(o.name, o.name): o.default for o in module.TASK.options},
                **{ALIASES.get(k, k): v for k, v in per_cell.items()}}
    hyper = {**defaults, **table("HYPERPARAMETERS")}
    if isinstance(table("EMBED_DIM"), int):
        hyper.setdefault("embed_dim", table("EMBED_DIM"))
    training = {**{k: defaults[k] for k in ("batch_size", "steps") if k in defaults}, **table("TRAINING")}
    return {k: hyper.get(k, default) for k, default in MODEL_OPTIONS[task].items()}, training


def batch_shape(task, small, cell="rnn"):
    """(B, T) of a task's training batch: the task's batch size and the data's padded length (``SHAPES``)."""
    _, training = task_options(task, cell)
    if small:
        return SMALL["B"], SMALL["T"]
    T = {"textgen": training.get("steps"), "speech": SHAPES["speech"]["frames"]}.get(task, SHAPES[task].get("T"))
    return training["batch_size"], T


def host_batch(task, B, T, seed=0):
    """The host arrays of one batch: inputs, targets, lengths and mask, as both implementations take them."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[task]

    def lengths_of(t):
        lengths = rng.integers(max(1, t - t // 5), t + 1, B)                # the tasks batch by length buckets
        lengths[0] = t                                                       # the batch is padded to its longest
        return lengths

    def ids(V, t, lengths, features=None):
        x = rng.integers(2, V, (t, B) if features is None else (t, B, features))
        x[np.arange(t)[:, None] >= lengths[None, :]] = 0                     # padding id 0
        return x

    if task == "sentiment":
        lengths = lengths_of(T)
        return dict(ids=ids(shape["V"], T, lengths), lengths=lengths, targets=rng.integers(0, 2, B).astype(float))
    if task == "tagging":
        from rnnbackends.tasks.tagging import NUM_FEATURES
        lengths = lengths_of(T)
        mask = np.arange(T)[:, None] < lengths[None, :]
        U = max(1, int(mask.sum()) * 3 // 5)                                 # distinct words of the batch
        word_index = np.where(mask, rng.integers(0, U, (T, B)), 0)
        char_lengths = rng.integers(1, min(12, shape["word_chars"]) + 1, U)
        char_lengths[0] = min(12, shape["word_chars"])
        chars = rng.integers(2, shape["chars"], (int(char_lengths.max()), U))
        chars[np.arange(chars.shape[0])[:, None] >= char_lengths[None, :]] = 0
        return dict(ids=ids(shape["V"], T, lengths, NUM_FEATURES), lengths=lengths, mask=mask, chars=chars,
                    char_lengths=char_lengths, word_index=word_index,
                    targets=np.where(mask, rng.integers(0, shape["K"], (T, B)), 0))
    if task == "textgen":
        return dict(ids=rng.integers(0, shape["V"], (T, B)), targets=rng.integers(0, shape["V"], (T, B)))
    if task == "translation":
        S = SMALL["T"] if T == SMALL["T"] else shape["S"]
        source_lengths, target_lengths = lengths_of(S), lengths_of(T)
        mask = np.arange(T)[:, None] < target_lengths[None, :]
        return dict(source=ids(shape["V_source"], S, source_lengths), source_lengths=source_lengths,
                    target_in=ids(shape["V_target"], T, target_lengths), target_lengths=target_lengths, mask=mask,
                    targets=np.where(mask, rng.integers(2, shape["V_target"], (T, B)), 0))
    if task == "timeseries":
        return dict(x=rng.standard_normal((T, B, 1)), targets=rng.standard_normal((B, 1)))
    if task == "speech":
        from rnnbackends.speech.model import output_lengths
        hyper, _ = task_options("speech")
        lengths = lengths_of(T)
        steps = output_lengths(lengths, hyper["stride"])
        label_lengths = np.clip(steps // 10, 1, 7)                           # 1-7 words, each ≥ 10 steps long
        labels = rng.integers(1, shape["K"] + 1, (B, int(label_lengths.max())))   # padded (B, L), blank = 0
        return dict(x=rng.standard_normal((T, B, shape["F"])), lengths=lengths, steps=steps, labels=labels,
                    label_lengths=label_lengths)
    raise ValueError(task)


def our_case(task, cell, backend, host, seed=0):
    """Our model of ``task`` on ``backend`` with the task's options, its loss, Adam and clipping, and the batch."""
    from rnnbackends import losses, models
    from rnnbackends.data import Batch
    from rnnbackends.optimizers import Adam
    hyper, training = task_options(task, cell)
    common = dict(cell=cell, backend=backend, seed=seed)
    if task == "sentiment":
        model = models.SequenceClassifier(SHAPES[task]["V"], 2, **hyper, **common)
        batch, loss = Batch((host["ids"], host["lengths"]), host["targets"]), losses.binary_cross_entropy
    elif task == "tagging":
        from rnnbackends.char_tagger import CharTagger
        from rnnbackends.tasks.tagging import NUM_FEATURES
        model = CharTagger(SHAPES[task]["V"], NUM_FEATURES, SHAPES[task]["chars"], SHAPES[task]["K"], **hyper,
                           **common)
        batch = Batch(tuple(host[k] for k in ("ids", "lengths", "chars", "char_lengths", "word_index")),
                      host["targets"], host["mask"])
        loss = losses.categorical_cross_entropy
    elif task == "textgen":
        model = models.LanguageModel(SHAPES[task]["V"], **hyper, stateful=True, **common)
        batch, loss = Batch((host["ids"],), host["targets"]), losses.categorical_cross_entropy
    elif task == "translation":
        from rnnbackends.attention import AttentionTranslator
        from rnnbackends.tasks.translation import valid_rows_cross_entropy
        model = AttentionTranslator(SHAPES[task]["V_source"], SHAPES[task]["V_target"], **hyper, **common)
        batch = Batch((host["source"], host["source_lengths"], host["target_in"], host["target_lengths"],
                       np.flatnonzero(host["mask"])), host["targets"], host["mask"])   # as the task: valid rows only
        loss = valid_rows_cross_entropy
    elif task == "timeseries":
        model = models.Forecaster(1, **hyper, **common)
        batch, loss = Batch((host["x"],), host["targets"]), losses.mean_squared_error
    else:
        from rnnbackends.speech.model import SpeechRecognizer
        from rnnbackends.tasks.speech import ctc_objective
        model = SpeechRecognizer(SHAPES[task]["F"], SHAPES[task]["K"], **hyper, **common)
        batch = Batch((host["x"], host["lengths"]), (host["labels"], host["label_lengths"], host["steps"]))
        loss = ctc_objective
    model.train()
    return Case(model, loss, Adam(training["lr"]), batch, training["clip_norm"])


def torch_case(task, cell, host, seed=0):
    """The same model in PyTorch, its loss, torch.optim.Adam and clip_grad_norm_: (model, step() -> loss, inputs)."""
    import torch
    from torch import nn
    from torch.nn import functional as F
    torch.manual_seed(seed)
    hyper, training = task_options(task, cell)
    shape = SHAPES[task]
    Cell = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
    tensor = lambda a, dtype=torch.float32: torch.as_tensor(np.asarray(a), dtype=dtype)   # noqa: E731

    def recurrent(input_size, hidden, layers=1, bidirectional=False, dropout=0.0):
        return Cell(input_size, hidden, layers, dropout=dropout if layers > 1 else 0.0, bidirectional=bidirectional)

    def run(rnn, x, lengths, state=None):
        """The RNN over padded x (T, B, D) with lengths: packed, as the same model needs for its reverse direction."""
        if lengths is None or bool((lengths == x.shape[0]).all()):
            return rnn(x, state)
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False)
        out, final = rnn(packed, state)
        return nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])[0], final

    def last_layer_states(final, directions):
        h = final[0] if cell == "lstm" else final
        return torch.cat(list(h[-directions:]), dim=1)                             # (B, H·dirs)

    if task == "sentiment":
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(shape["V"], hyper["embed_dim"], padding_idx=0)
                self.rnn = recurrent(hyper["embed_dim"], hyper["hidden_size"], bidirectional=hyper["bidirectional"])
                self.embed_dropout, self.dropout = nn.Dropout(hyper["embed_dropout"]), nn.Dropout(hyper["dropout"])
                self.output = nn.Linear(hyper["hidden_size"] * (2 if hyper["bidirectional"] else 1), 1)

            def forward(self, ids, lengths):
                a, final = run(self.rnn, self.embed_dropout(self.embedding(ids)), lengths)
                valid = (torch.arange(ids.shape[0])[:, None] < torch.as_tensor(lengths)[None, :])[:, :, None]
                if hyper["pooling"] == "max":
                    pooled = a.masked_fill(~valid, float("-inf")).max(dim=0).values
                elif hyper["pooling"] == "mean":
                    pooled = (a * valid).sum(dim=0) / valid.sum(dim=0)
                else:
                    pooled = last_layer_states(final, 2 if hyper["bidirectional"] else 1)
                return self.output(self.dropout(pooled))[:, 0]
        model = Model()
        inputs = (tensor(host["ids"], torch.long), host["lengths"])
        targets = tensor(host["targets"])
        loss_of = lambda logits: F.binary_cross_entropy_with_logits(logits, targets)   # noqa: E731
    elif task in ("tagging", "translation"):
        targets = tensor(np.where(host["mask"], host["targets"], -100), torch.long).reshape(-1)
        loss_of = lambda logits: F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)   # noqa: E731
        if task == "tagging":
            class Model(nn.Module):
                """Feature embeddings and each distinct word's spelling (a bidirectional char RNN), as CharTagger."""

                def __init__(self):
                    super().__init__()
                    D, H = hyper["embed_dim"], hyper["hidden_size"]
                    self.embedding = nn.Embedding(shape["V"], D, padding_idx=0)
                    self.char_embedding = nn.Embedding(shape["chars"], hyper["char_embed_dim"], padding_idx=0)
                    self.char_rnn = recurrent(hyper["char_embed_dim"], hyper["char_hidden_size"], bidirectional=True)
                    self.rnn = recurrent(host["ids"].shape[2] * D + 2 * hyper["char_hidden_size"], H,
                                         hyper["num_layers"], True, hyper["dropout"])
                    self.embed_dropout, self.dropout = nn.Dropout(hyper["embed_dropout"]), nn.Dropout(hyper["dropout"])
                    self.output = nn.Linear(2 * H, shape["K"])

                def forward(self, ids, lengths, chars, char_lengths, word_index):
                    T, B, _ = ids.shape
                    _, final = run(self.char_rnn, self.char_embedding(chars), char_lengths)
                    spellings = last_layer_states(final, 2)                                      # (U, 2·H_c)
                    x = torch.cat([self.embedding(ids).reshape(T, B, -1), spellings[word_index]], dim=2)
                    a, _ = run(self.rnn, self.embed_dropout(x), lengths)
                    return self.output(self.dropout(a))
            model = Model()
            inputs = (tensor(host["ids"], torch.long), host["lengths"], tensor(host["chars"], torch.long),
                      host["char_lengths"], tensor(host["word_index"], torch.long))
        else:
            class Model(nn.Module):
                """Luong attention ("general") over a bidirectional encoder, as rnnbackends.attention."""

                def __init__(self):
                    super().__init__()
                    D, H = hyper["embed_dim"], hyper["hidden_size"]
                    self.source_embedding = nn.Embedding(shape["V_source"], D, padding_idx=0)
                    self.target_embedding = nn.Embedding(shape["V_target"], D, padding_idx=0)
                    self.encoder, self.decoder = recurrent(D, H // 2, bidirectional=True), recurrent(D, H)
                    self.bridge = nn.Linear(H, H)
                    self.w_alpha = nn.Linear(H, H, bias=False)
                    self.combine = nn.Linear(2 * H, H)
                    self.dropouts = nn.ModuleList(nn.Dropout(hyper["dropout"]) for _ in range(3))
                    self.output = nn.Linear(H, shape["V_target"])

                def forward(self, source, source_lengths, target_in, target_lengths):
                    memory, final = run(self.encoder, self.dropouts[0](self.source_embedding(source)), source_lengths)
                    h = final[0] if cell == "lstm" else final
                    a0 = torch.tanh(self.bridge(torch.cat([h[0], h[1]], dim=1)))[None]       # (1, B, H)
                    state = (a0, torch.zeros_like(a0)) if cell == "lstm" else a0
                    a, _ = run(self.decoder, self.dropouts[1](self.target_embedding(target_in)), target_lengths,
                               state)
                    q, m = a.transpose(0, 1), memory.transpose(0, 1)                           # (B, T, H), (B, S, K)
                    scores = q @ self.w_alpha(m).transpose(1, 2)                               # (B, T, S)
                    valid = torch.arange(m.shape[1])[None, :] < torch.as_tensor(source_lengths)[:, None]
                    alpha = scores.masked_fill(~valid[:, None, :], float("-inf")).softmax(-1)
                    attended = torch.tanh(self.combine(torch.cat([alpha @ m, q], dim=2)))      # (B, T, H)
                    return self.output(self.dropouts[2](attended.transpose(0, 1)))
            model = Model()
            inputs = (tensor(host["source"], torch.long), host["source_lengths"], tensor(host["target_in"], torch.long),
                      host["target_lengths"])
    elif task == "textgen":
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(shape["V"], hyper["embed_dim"])
                self.rnn = recurrent(hyper["embed_dim"], hyper["hidden_size"], hyper["num_layers"],
                                     dropout=hyper["dropout"])
                self.dropout = nn.Dropout(hyper["dropout"])                          # before the output layer
                self.output = nn.Linear(hyper["hidden_size"], shape["V"])
                self.state = None

            def forward(self, ids):
                state = None if self.state is None else (tuple(s.detach() for s in self.state) if cell == "lstm"
                                                         else self.state.detach())
                a, self.state = self.rnn(self.embedding(ids), state)                 # stateful: carried, detached
                return self.output(self.dropout(a))
        model = Model()
        inputs = (tensor(host["ids"], torch.long),)
        targets = tensor(host["targets"], torch.long).reshape(-1)
        loss_of = lambda logits: F.cross_entropy(logits.reshape(-1, shape["V"]), targets)   # noqa: E731
    elif task == "timeseries":
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = recurrent(1, hyper["hidden_size"])
                self.output = nn.Linear(hyper["hidden_size"], 1)

            def forward(self, x):
                _, final = self.rnn(x)
                return self.output(last_layer_states(final, 1))
        model = Model()
        inputs = (tensor(host["x"]),)
        targets = tensor(host["targets"])
        loss_of = lambda predictions: F.mse_loss(predictions, targets)   # noqa: E731
    else:
        stride = hyper["stride"]

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = recurrent(shape["F"] * stride, hyper["hidden_size"], hyper["num_layers"],
                                     hyper["bidirectional"], hyper["dropout"])
                self.dropout = nn.Dropout(hyper["dropout"])
                self.output = nn.Linear(hyper["hidden_size"] * (2 if hyper["bidirectional"] else 1), shape["K"] + 1)

            def forward(self, x, steps):
                T, B, F_ = x.shape
                padded = F.pad(x, (0, 0, 0, 0, 0, -T % stride))                         # frames stacked by stride
                stacked = padded.reshape(-1, stride, B, F_).permute(0, 2, 1, 3).reshape(-1, B, stride * F_)
                a, _ = run(self.rnn, stacked, steps)
                return self.output(self.dropout(a))
        model = Model()
        inputs = (tensor(host["x"]), host["steps"])
        labels, steps = torch.as_tensor(host["labels"]), torch.as_tensor(host["steps"])
        loss_of = lambda logits: F.ctc_loss(logits.log_softmax(-1), labels, steps,   # noqa: E731
                                            torch.as_tensor(host["label_lengths"]), zero_infinity=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=training["lr"])
    model.train()

    def step():
        """forward, loss, backward, clip_grad_norm_, Adam."""
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model(*inputs))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), training["clip_norm"])
        optimizer.step()
        return float(loss.detach())
    return model, step, inputs


# -- timing our step with its split -------------------------------------------------------------------------------

class Split:
    """Wall time of our step's parts: forward, loss, backward, optimiser (the rest of the step), and the backend's
    recurrent calls inside forward and backward. Installed as wrappers on the model, loss and backend handle."""

    PARTS = ("backend", "other_layers", "loss", "optimizer")

    def __init__(self, case):
        self.case, self.seconds = case, {}
        backend = case.model.backend
        self.backend = backend
        self.originals = {name: getattr(backend, name) for name in ("forward_sequence", "backward_sequence")}
        for name, original in self.originals.items():
            setattr(backend, name, self.timed("backend", original))
        self.forward = self.timed("forward", case.model.forward)
        self.backward = self.timed("backward", case.model.backward)
        self.loss_fn = self.timed("loss", case.loss_fn)

    def timed(self, part, fn):
        """fn, adding its wall time to ``part``."""
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - started
        return wrapper

    def remove(self):
        """Give the backend handle its own methods back."""
        for name in self.originals:
            delattr(self.backend, name)

    def step(self):
        """One ``train_step`` of the case; returns {part: ms} of this step and the total."""
        from rnnbackends.training import train_step
        case, model = self.case, self.case.model
        self.seconds = {}
        model.forward, model.backward = self.forward, self.backward
        try:
            started = time.perf_counter()
            train_step(model, self.loss_fn, case.optimizer, case.batch, clip_norm=case.clip_norm)
            total = time.perf_counter() - started
        finally:
            del model.forward, model.backward
        s = self.seconds
        layers = s.get("forward", 0.0) + s.get("backward", 0.0)
        parts = {"backend": s.get("backend", 0.0), "other_layers": layers - s.get("backend", 0.0),
                 "loss": s.get("loss", 0.0), "optimizer": total - layers - s.get("loss", 0.0)}
        return total * 1e3, {k: v * 1e3 for k, v in parts.items()}


def time_training(task, cell, backends, warmup, repeats, small):
    """Rows of one task and cell: every backend and torch, interleaved step by step; medians and splits."""
    import torch
    B, T = batch_shape(task, small, cell)
    host = host_batch(task, B, T)
    splits = {name: Split(our_case(task, cell, backend, host)) for name, backend in backends.items()}
    _, torch_step, _ = torch_case(task, cell, host)
    steps = {name: split.step for name, split in splits.items()}
    steps[PEER] = torch_step
    times, parts = {name: [] for name in steps}, {name: [] for name in splits}
    try:
        for _ in range(warmup):
            for step in steps.values():
                step()
        for _ in range(repeats):
            for name, step in steps.items():
                if name == PEER:
                    times[name].append(runner.wall_ms(step))
                else:
                    ms, split = step()
                    times[name].append(ms)
                    parts[name].append(split)
    finally:
        for split in splits.values():
            split.remove()
    rows = []
    for name, all_ms in times.items():
        ms = statistics.median(all_ms)
        row = {"group": f"train-{task}-{cell}", "task": task, "cell": cell, "H": None, "B": B, "T": T, "impl": name,
               "pass": "train-step", "median_ms": ms, "min_ms": min(all_ms), "repeats_ms": all_ms,
               "us_per_step": ms * 1e3 / T, "torch_threads": torch.get_num_threads()}
        if name != PEER:
            model = splits[name].case.model
            row["H"] = model.config.get("hidden_size")
            row["params"] = model.num_params()
            row["split_ms"] = {k: statistics.median(p[k] for p in parts[name]) for k in Split.PARTS}
            row["outside_backend"] = 1.0 - statistics.median(p["backend"] / t for p, t in zip(parts[name], all_ms))
        rows.append(row)
    peer_ms = times[PEER]
    for row in rows:
        row[f"speedup_vs_{PEER}"] = statistics.median(peer_ms) / row["median_ms"]
    return rows


# -- inference ----------------------------------------------------------------------------------------------------

def time_inference(task, backends, warmup, repeats, small):
    """Rows of predict (sentences/s) or generate (characters/s) for ``task``, ours and torch, interleaved."""
    import torch

    from rnnbackends.layers import to_host
    B, T = batch_shape(task, small)
    count = SMALL["B"] if small else PREDICT_BATCH
    host = host_batch(task, count, T, seed=1)
    calls, units = {}, count
    torch_model, _, torch_inputs = torch_case(task, "rnn", host)
    torch_model.eval()
    if task in ("sentiment", "tagging"):                                     # probabilities, or tags
        answer = (lambda z: 1.0 / (1.0 + np.exp(-z))) if task == "sentiment" else (lambda z: z.argmax(axis=-1))
        for name, backend in backends.items():
            case = our_case(task, "rnn", backend, host)
            case.model.eval()
            calls[name] = lambda case=case: answer(to_host(case.model.forward(*case.batch.inputs)))
        torch_answer = torch.sigmoid if task == "sentiment" else (lambda z: z.argmax(dim=-1))
        calls[PEER] = lambda: torch_answer(torch_model(*torch_inputs)).numpy()
        what = "predict"
    else:                                                                    # textgen: characters sampled
        from rnnbackends.tasks.textgen import TEMPERATURE
        length = 20 if small else GENERATE_LENGTH
        prime = list(range(2, 8))
        for name, backend in backends.items():
            model = our_case(task, "rnn", backend, host).model
            calls[name] = lambda model=model: model.generate(prime, length, TEMPERATURE, None, np.random.default_rng(0))

        def torch_generate():
            """The same sampling loop in PyTorch: one step of the module per character."""
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                torch_model.state = None
                torch_model(torch.as_tensor(prime[:-1])[:, None])
                token, out = prime[-1], []
                for _ in range(length):
                    logits = torch_model(torch.tensor([[token]]))[0, 0]
                    token = int(torch.multinomial(torch.softmax(logits / TEMPERATURE, -1), 1, generator=generator))
                    out.append(token)
            return out
        calls[PEER], units, what = torch_generate, length, "generate"
    grad = torch.no_grad()
    times = {name: [] for name in calls}
    with grad:
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(repeats):
            for name, call in calls.items():
                times[name].append(runner.wall_ms(call))
    rows = []
    for name, all_ms in times.items():
        ms = statistics.median(all_ms)
        rows.append({"group": f"{what}-{task}", "task": task, "cell": "rnn", "H": None, "B": count if what ==
                     "predict" else 1, "T": T if what == "predict" else units, "impl": name, "pass": what,
                     "median_ms": ms, "min_ms": min(all_ms), "repeats_ms": all_ms, "us_per_step": ms * 1e3 / units,
                     "per_second": units / (ms * 1e-3), "unit": "sentences" if what == "predict" else "characters",
                     f"speedup_vs_{PEER}": statistics.median(times[PEER]) / ms})
    return rows


# -- the suite ----------------------------------------------------------------------------------------------------

def run_suite(args):
    """Time every task and cell with BLAS, numba and torch at args.threads; returns the result perf's runner writes."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(args.threads, user_api="blas"):
        return _run_suite(args)


def _run_suite(args):
    import torch

    import rnnbackends
    tasks, cells = _names(args.tasks, TASKS, "task(s)"), _names(args.cells, CELLS, "cell(s)")
    available = [i.name for i in rnnbackends.list_backends() if i.available and i.spec and i.spec.device == "cpu"]
    names = _names(args.backends or ",".join(n for n in ("numba", "numpy") if n in available), available,
                   "backend(s)")
    backends = {name: rnnbackends.get_backend(name) for name in names}
    torch.set_num_threads(args.threads)
    if "numba" in backends:
        import numba
        numba.set_num_threads(args.threads)
    warmup, repeats = (1, 5) if args.quick else (args.warmup, args.repeats)
    rows = []
    for task in tasks:
        for cell in cells:
            rows += time_training(task, cell, backends, warmup, repeats, args.small)
            print(f"[e2e] {task} {cell}: " + ", ".join(f"{r['impl']} {r['median_ms']:.2f} ms" for r in rows[-len(
                backends) - 1:]), file=sys.stderr)
    if not args.quick:
        for task in (t for t in ("sentiment", "tagging", "textgen") if t in tasks):
            rows += time_inference(task, backends, warmup, repeats, args.small)
            print(f"[e2e] {rows[-1]['pass']} {task}: " + ", ".join(
                f"{r['impl']} {r['per_second']:.0f}/s" for r in rows[-len(backends) - 1:]), file=sys.stderr)
    return {"suite": "e2e", "peer": PEER, "primary": "numba" if "numba" in backends else names[0],
            "dtype": "float32", "threads": args.threads, "quick": args.quick, "small": args.small,
            "timing": {"warmup": warmup, "repeats": repeats, "statistic": "median", "interleaved": True},
            "machine": machine(args.threads), "rows": rows, "targets": targets(rows)}


def machine(threads):
    """Versions and thread counts of everything timed."""
    import threadpoolctl
    import torch

    import rnnbackends
    blas = [f"{c['internal_api']} {c['version']} ({c['num_threads']} threads)"
            for c in threadpoolctl.threadpool_info() if c["user_api"] == "blas"]
    info = {"numpy": np.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "threads": threads, "blas": blas, "rnnbackends": rnnbackends.__version__}
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        info.update(numba=numba.__version__, numba_threads=numba.get_num_threads())
    return info


def targets(rows):
    """The suite's targets, measured: per backend the worst and geometric-mean step speed-up over torch, the
    largest share of a step outside the backend's recurrent calls, and the inference speed-ups."""
    key = f"speedup_vs_{PEER}"
    out = {}
    for impl in dict.fromkeys(r["impl"] for r in rows if r["impl"] != PEER):
        steps = [r for r in rows if r["impl"] == impl and r["pass"] == "train-step"]
        inference = [r for r in rows if r["impl"] == impl and r["pass"] != "train-step"]
        if not steps:
            continue
        worst = min(steps, key=lambda r: r[key])
        outside = max(steps, key=lambda r: r["outside_backend"])
        out[impl] = {"step_geomean_speedup": runner.geomean(r[key] for r in steps),
                     "step_worst_speedup": worst[key], "step_worst": f"{worst['task']} {worst['cell']}",
                     "outside_backend_max": outside["outside_backend"],
                     "outside_backend_max_at": f"{outside['task']} {outside['cell']}",
                     "outside_backend_median": statistics.median(r["outside_backend"] for r in steps),
                     "inference_speedups": {f"{r['pass']} {r['task']}": r[key] for r in inference}}
    return out


def _threads(result):
    """'1 thread', '2 threads', ..."""
    return f"{result['threads']} thread{'s' if result['threads'] != 1 else ''}"


def target_lines(results):
    """Markdown bullets of the targets of one or more e2e results (for ``python -m perf headline``)."""
    lines = []
    for result in results:
        for impl, t in (result.get("targets") or {}).items():
            step_target = TARGETS["numba_step"] if impl == "numba" else TARGETS["numpy_step"]
            line = (f"- {impl}, {_threads(result)}: training step over the same PyTorch model, worst "
                    f"**{t['step_worst_speedup']:.2f}×** ({t['step_worst']}; target ≥ {step_target:g}×), geometric "
                    f"mean **{t['step_geomean_speedup']:.2f}×**")
            if impl == "numba":
                line += f" (target ≥ {TARGETS['numba_geomean']:g}×)"
            line += (f"; outside the backend's recurrent calls at most **{t['outside_backend_max']:.0%}** of a step "
                     f"({t['outside_backend_max_at']}; median {t['outside_backend_median']:.0%}; target ≤ "
                     f"{TARGETS['outside_backend']:.0%})")
            if t["inference_speedups"]:
                line += "; " + ", ".join(f"{k} **{v:.2f}×**" for k, v in t["inference_speedups"].items()) + \
                        f" (target ≥ {TARGETS['inference']:g}×)"
            lines.append(line)
    return lines


def headline(results):
    """The suite's section of ``python -m perf headline``: per task and cell the training step's speed-up over the same
    PyTorch model and the share outside the backend's recurrent calls, inference throughput, targets, provenance."""
    key = f"speedup_vs_{PEER}"
    lines = ["End-to-end training step (forward, loss, backward, clipping, Adam) of each task's default model: "
             "speed-up over the same model in PyTorch (same batch, optimiser, clipping and threads), and in brackets "
             "the share of our step outside the backend's recurrent calls.", ""]
    for result in results:
        rows = runner.timed_rows(result)
        impls = list(dict.fromkeys(r["impl"] for r in rows if r["impl"] != PEER))
        index = {(r["task"], r["cell"], r["impl"], r["pass"]): r for r in rows}
        cells = list(dict.fromkeys(r["cell"] for r in rows if r["pass"] == "train-step"))
        lines += [f"{_threads(result)}:", "",
                  "| task | " + " | ".join(f"{impl} {cell}" for impl in impls for cell in cells) + " |",
                  "|---|" + "---|" * (len(impls) * len(cells))]
        for task in dict.fromkeys(r["task"] for r in rows if r["pass"] == "train-step"):
            row = [index.get((task, cell, impl, "train-step")) for impl in impls for cell in cells]
            lines.append(f"| {task} | " + " | ".join(f"{r[key]:.2f}× ({r['outside_backend']:.0%})" if r else ""
                                                     for r in row) + " |")
        inference = [r for r in rows if r["pass"] != "train-step" and r["impl"] != PEER]
        if inference:
            lines += ["", "Inference: " + "; ".join(
                f"{r['pass']} {r['task']} {r['impl']} {r['per_second']:.0f} {r['unit']}/s ({r[key]:.2f}× PyTorch)"
                for r in inference) + "."]
        run = result.get("run", {})
        load = (run.get("load_before") or [float("nan")])[0]
        lines += ["", *target_lines([result]), "",
                  f"Measured {run.get('started_utc', '?')}, commit {run.get('git_commit', '?')[:7]}, "
                  f"{run.get('cpu', '?')}, 1-minute load average {load:.1f} before the "
                  f"run (full table: `{Path(result.get('path', 'perf/results/e2e/e2e.json')).with_suffix('.md')}`).",
                  ""]
    return "\n".join(lines)


def markdown(result):
    """The suite's tables: targets, every training step with its split, inference throughput."""
    run, key = result.get("run", {}), f"speedup_vs_{PEER}"
    rows = runner.timed_rows(result)
    impls = list(dict.fromkeys(r["impl"] for r in rows if r["impl"] != PEER))
    lines = [f"# End-to-end suite — {run.get('cpu', '')}, {_threads(result)}, float32", "",
             f"{run.get('started_utc', '')}, commit {run.get('git_commit', '')[:12]}; torch "
             f"{result['machine'].get('torch')}. Each impl's step timed in turn (interleaved), median of "
             f"{result['timing']['repeats']} after {result['timing']['warmup']} warm-up. Load average before "
             f"{run.get('load_before')}, after {run.get('load_after')}.", "", "## Targets", ""]
    lines += target_lines([result])
    lines += ["", "## Training step (forward, loss, backward, clipping, Adam)", "",
              "| task | cell | B | T | torch ms | " + " | ".join(
                  f"{i} ms | {i} speed-up | {i} split: backend / other layers / loss / optimiser ms | "
                  f"{i} outside backend" for i in impls) + " |",
              "|---|---|---|---|---|" + "---|---|---|---|" * len(impls)]
    index = {(r["group"], r["cell"], r["impl"]): r for r in rows}
    for r in rows:
        if r["impl"] != PEER or r["pass"] != "train-step":
            continue
        cells = []
        for impl in impls:
            o = index.get((r["group"], r["cell"], impl))
            if o is None:
                cells.append(" | | | ")
                continue
            split = " / ".join(f"{o['split_ms'][k]:.2f}" for k in Split.PARTS)
            cells.append(f"{o['median_ms']:.2f} | {o[key]:.2f}× | {split} | {o['outside_backend']:.0%}")
        lines.append(f"| {r['task']} | {r['cell']} | {r['B']} | {r['T']} | {r['median_ms']:.2f} | "
                     + " | ".join(cells) + " |")
    inference = [r for r in rows if r["pass"] != "train-step"]
    if inference:
        lines += ["", "## Inference throughput", "", "| what | task | impl | per second | ms per call | speed-up |",
                  "|---|---|---|---|---|---|"]
        for r in inference:
            lines.append(f"| {r['pass']} | {r['task']} | {r['impl']} | {r['per_second']:.0f} {r['unit']} | "
                         f"{r['median_ms']:.2f} | {r[key]:.2f}× |")
    return "\n".join(lines) + "\n"
