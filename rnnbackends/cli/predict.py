"""``predict``, ``generate`` and ``translate``: a saved checkpoint in, one output per input line (or a sample) out."""
from __future__ import annotations

from ..tasks import get_task, textgen, translation
from .common import (
    add_backend_option,
    add_checkpoint_option,
    add_input_argument,
    announce_compilation,
    check_backend,
    check_input,
    integer,
    one_blas_thread,
    read_lines,
    reading_checkpoint,
    real,
    text,
)
from .train import checkpoint_task


def add_predict_commands(sub):
    """Add ``predict``, ``generate`` (text from a textgen checkpoint) and ``translate`` (English -> Spanish)."""
    p = sub.add_parser("predict",
                       help="predict with a saved checkpoint: one input per line in, one prediction per line out")
    add_checkpoint_option(p)
    p.add_argument("input", nargs="*", default=["-"], type=text, metavar="FILE|-",
                   help="input lines, one per line (default '-': standard input); speech: audio files, or '-' to "
                        "read their paths from standard input")
    add_backend_option(p)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("generate", help="sample text from a textgen checkpoint")
    add_checkpoint_option(p, "'train textgen --save'")
    p.add_argument("--prime", default=textgen.PRIME, help=f"the text to continue (default {textgen.PRIME!r})")
    p.add_argument("--length", type=integer(0), default=textgen.SAMPLE_LENGTH, metavar="N",
                   help=f"tokens (characters or words) to generate (default {textgen.SAMPLE_LENGTH})")
    p.add_argument("--temperature", type=real(0), default=textgen.TEMPERATURE, metavar="T",
                   help=f"softmax temperature; 0 is greedy (default {textgen.TEMPERATURE})")
    p.add_argument("--top-k", type=integer(1), metavar="K", help="sample only among the K most probable tokens")
    p.add_argument("--seed", type=integer(0), metavar="S", help="seed of the sampler (default: a fresh one each run)")
    add_backend_option(p)
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("translate", help="translate English lines to Spanish with a translation checkpoint")
    add_checkpoint_option(p, "'train translation --save'")
    add_input_argument(p, "English lines")
    p.add_argument("--beam", type=integer(1), default=translation.DECODING["beam_size"], metavar="K",
                   help=f"beam width; 1 is greedy (default {translation.DECODING['beam_size']})")
    add_backend_option(p)
    p.set_defaults(func=cmd_translate)


def expect_task(directory, expected, command):
    """A ValueError unless the checkpoint in ``directory`` was saved by task ``expected``."""
    task = checkpoint_task(directory)
    if task != expected:
        raise ValueError(f"{directory}: a {task} checkpoint; '{command}' needs a {expected} one")


def cmd_predict(args) -> int:
    """Read inputs one per line from FILE or standard input and print one prediction per line."""
    task = get_task(checkpoint_task(args.checkpoint))
    if task.predict_input == "paths":                                   # e.g. audio files; the task checks them
        lines = read_lines("-") if args.input == ["-"] else args.input
    else:
        if len(args.input) != 1:
            raise ValueError(f"predict takes one FILE (or - for standard input), got {len(args.input)}")
        check_input(args.input[0])
        lines = read_lines(args.input[0])
    announce_compilation(check_backend(args.backend))
    with one_blas_thread(), reading_checkpoint(args.checkpoint):
        for prediction in task.predict(args.checkpoint, lines, backend=args.backend):
            print(prediction)
    return 0


def cmd_generate(args) -> int:
    """Print the prime and the text sampled after it."""
    expect_task(args.checkpoint, "textgen", "generate")
    announce_compilation(check_backend(args.backend))
    with one_blas_thread(), reading_checkpoint(args.checkpoint):
        print(textgen.generate(args.checkpoint, args.prime, args.length, args.temperature, args.top_k, args.seed,
                               backend=args.backend))
    return 0


def cmd_translate(args) -> int:
    """Read English lines from FILE or standard input and print one Spanish line for each."""
    expect_task(args.checkpoint, "translation", "translate")
    check_input(args.input)
    announce_compilation(check_backend(args.backend))
    lines = read_lines(args.input)
    with one_blas_thread(), reading_checkpoint(args.checkpoint):
        for sentence in translation.translate(args.checkpoint, lines, args.beam, backend=args.backend):
            print(sentence)
    return 0
