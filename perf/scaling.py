"""Data-parallel scaling: ``mpiexec -n N python -m perf.scaling --task sentiment|tagging --out DIR`` (N = 1 without
mpiexec) trains one model of the task as the task does (its hyperparameters, batches and optimiser) for a fixed
number of epochs and writes DIR/scaling-TASK-NxT.json (T: Numba threads per rank): per epoch the training
seconds (validation excluded), sequences/s (the table: epochs after the first) and the validation metric, the
seconds until the validation metric first reached the target, and the cost of one all-reduce of the model's
gradient buffer and of a range of sizes. ``--merge DIR`` writes DIR/scaling.md from every such file;
``--step-rows 64,32,16`` times one training step at those rows per batch instead (one process).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from rnnbackends import distributed
from rnnbackends.files import write_atomically
from rnnbackends.optimizers import Adam
from rnnbackends.training import epoch_rng, fit

TARGETS = {"sentiment": 0.80, "tagging": 0.90}          # validation accuracy both rank counts reach in a few epochs


def sentiment(backend, seed):
    """(model, loss, batches(epoch), validate, training sequences) of one sentiment ensemble member."""
    from rnnbackends.losses import binary_cross_entropy
    from rnnbackends.models import SequenceClassifier
    from rnnbackends.tasks import sentiment as task
    d = task.prepare(None)
    model = SequenceClassifier(len(d.vocabulary), 2, **task.HYPERPARAMETERS, backend=backend, seed=seed)
    rng = np.random.default_rng(seed)

    def validate(m):
        p = task.probabilities([m], d.ids, d.val)
        return {"val_accuracy": float(((p > 0.5) == d.labels[d.val]).mean())}
    return (model, binary_cross_entropy, lambda epoch: task.batches_of(d.ids, d.labels, d.train,
                                                                       task.TRAINING["batch_size"], rng),
            validate, len(d.train), task.TRAINING)


def tagging(backend, seed):
    """(model, loss, batches(epoch), validate, training sequences) of the tagging task's model."""
    from rnnbackends.layers import to_host
    from rnnbackends.losses import categorical_cross_entropy
    from rnnbackends.models import FeatureTagger
    from rnnbackends.tasks import tagging as task
    d = task.prepare(None)
    model = FeatureTagger(len(d.vocabulary), task.NUM_FEATURES, len(task.UPOS), **task.HYPERPARAMETERS,
                          backend=backend, seed=seed)
    train = np.arange(len(d.parts["train"]))

    def validate(m):
        correct = total = 0
        for batch in task.batches_of(d.encoded["dev"], d.tag_ids["dev"], np.arange(len(d.parts["dev"])), 256):
            correct += int(((to_host(m.forward(*batch.inputs)).argmax(-1) == batch.targets) & batch.mask).sum())
            total += int(batch.mask.sum())
        return {"val_accuracy": correct / total}
    return (model, categorical_cross_entropy, lambda epoch: task.batches_of(
        d.encoded["train"], d.tag_ids["train"], train, task.TRAINING["batch_size"], epoch_rng(seed, epoch),
        task.TRAINING["word_dropout"], d.vocabulary.unk_id), validate, len(train), task.TRAINING)


def allreduce_ms(communicator, elements, repeats=20):
    """Median ms of one ``allreduce_sum`` of ``elements`` float32 values (as a training step sends them)."""
    buffer = np.ones(elements, np.float32)
    times = []
    for _ in range(repeats + 2):
        communicator.barrier()
        started = time.perf_counter()
        communicator.allreduce_sum(buffer)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times[2:])


def step_ms(task, rows, backend, seed, steps=16):
    """Median ms of one training step (forward, backward, update) of ``task``'s model on ``rows`` rows per batch:
    the compute of one rank when a global batch is split into blocks of ``rows``."""
    from rnnbackends.training import train_step
    model, loss, batches, _, _, training = {"sentiment": sentiment, "tagging": tagging}[task](backend, seed)
    optimizer, times = Adam(training["lr"]), []
    for batch in batches(0)[:steps + 2]:
        part = distributed.shard(batch, 0, max(1, round(len(batch.inputs[1]) / rows)))
        started = time.perf_counter()
        train_step(model, loss, optimizer, part, training["clip_norm"])
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times[2:])


def numba_threads():
    """Threads each Numba kernel may use in this process."""
    import numba
    return numba.get_num_threads()


def measure(task, epochs, backend, seed):
    """The scaling record of ``task`` on this world."""
    communicator = distributed.current()
    model, loss, batches, validate, sequences, training = {"sentiment": sentiment, "tagging": tagging}[task](
        backend, seed)
    validation_s = []

    def timed_validate(m):
        started = time.perf_counter()
        record = validate(m)
        validation_s.append(time.perf_counter() - started)
        return record

    started = time.perf_counter()
    history = fit(model, loss, Adam(training["lr"]), batches, epochs=epochs, validate=timed_validate,
                  monitor="val_accuracy", higher_is_better=True, clip_norm=training["clip_norm"], progress=False,
                  log=None)
    wall = time.perf_counter() - started
    elapsed, reached = 0.0, None
    for record, v in zip(history, validation_s or [0.0] * len(history)):
        record["train_seconds"] = record["seconds"] - v
        record["sequences_per_s"] = sequences / record["train_seconds"]
        elapsed += record["seconds"]
        if reached is None and record["val_accuracy"] >= TARGETS[task]:
            reached = {"epoch": record["epoch"], "seconds": elapsed}
    steady = history[1:] or history                    # the first epoch also compiles kernels on a cold cache
    params = sum(int(p.size) for p in model.params.values())
    cost = {n: allreduce_ms(communicator, n) for n in (params + 2, 10_000, 100_000, 1_000_000, 4_000_000)}
    return {"task": task, "ranks": communicator.size, "backend": model.backend.name,
            "batch_size": training["batch_size"], "rows_per_rank": training["batch_size"] / communicator.size,
            "sequences_per_epoch": sequences, "epochs": epochs, "parameters": params,
            "gradient_buffer_bytes": (params + 2) * 4, "target": {"val_accuracy": TARGETS[task]},
            "reached_target": reached, "wall_seconds": wall, "history": history,
            "sequences_per_s": sequences * len(steady) / sum(r["train_seconds"] for r in steady),
            "allreduce_ms": {str(n): ms for n, ms in cost.items()},
            "numba_threads": numba_threads(), "load_average": list(os.getloadavg()),
            "cpus": os.cpu_count(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def markdown(folder):
    """The table of every scaling-*.json in ``folder``."""
    records = sorted((json.loads(p.read_text()) for p in Path(folder).glob("scaling-*-*.json")),
                     key=lambda r: (r["task"], r["ranks"], -r["numba_threads"]))
    lines = ["| task | ranks × threads | rows per rank | sequences/s | time to target (epoch) | final val accuracy | "
             "parameters | all-reduce of the gradients | load average |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        reached = r["reached_target"]
        to_target = f"{reached['seconds']:.1f} s ({reached['epoch']})" if reached else "not reached"
        lines.append(f"| {r['task']} (val accuracy ≥ {r['target']['val_accuracy']:.2f}) | "
                     f"{r['ranks']} × {r['numba_threads']} | "
                     f"{r['rows_per_rank']:g} | {r['sequences_per_s']:.0f} | {to_target} | "
                     f"{r['history'][-1]['val_accuracy']:.3f} | {r['parameters']:,} | "
                     f"{r['gradient_buffer_bytes'] / 1e6:.2f} MB: {r['allreduce_ms'][str(r['parameters'] + 2)]:.3f} ms"
                     f" | {r['load_average'][0]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Measure one task on this world, or merge the records of a folder into a table."""
    parser = argparse.ArgumentParser(prog="python -m perf.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TARGETS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="perf/results/scaling")
    parser.add_argument("--merge", metavar="DIR", help="write DIR/scaling.md from DIR/scaling-*.json")
    parser.add_argument("--step-rows", metavar="R,R,...",
                        help="instead: median ms of one training step at these rows per batch (one process)")
    args = parser.parse_args(argv)
    if args.merge:
        write_atomically(Path(args.merge) / "scaling.md", markdown(args.merge))
        print(Path(args.merge) / "scaling.md")
        return 0
    if args.task is None:
        parser.error("give --task or --merge")
    if args.step_rows:
        rows = [int(r) for r in args.step_rows.split(",")]
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1, user_api="blas"):
            steps = {r: step_ms(args.task, r, args.backend, args.seed) for r in rows}
        record = {"task": args.task, "numba_threads": numba_threads(), "load_average": list(os.getloadavg()),
                  "step_ms_by_rows": steps}
        path = Path(args.out) / f"steps-{args.task}-x{record['numba_threads']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(record, indent=1) + "\n")
        print(path, record["step_ms_by_rows"])
        return 0
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="blas"), distributed.together():
        record = measure(args.task, args.epochs, args.backend, args.seed)
    if distributed.current().rank == 0:
        path = Path(args.out) / f"scaling-{args.task}-{record['ranks']}x{record['numba_threads']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(record, indent=1) + "\n")
        print(f"{path}: {record['sequences_per_s']:.0f} sequences/s, target {record['reached_target']}, "
              f"all-reduce {record['allreduce_ms']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
