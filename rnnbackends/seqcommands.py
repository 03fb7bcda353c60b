"""The ``generate`` and ``translate`` sub-commands of the ``rnnbackends`` CLI."""
from __future__ import annotations

import sys

from .commands import one_blas_thread
from .tasks import textgen, translation


def add_sequence_commands(sub):
    """Add ``generate`` (text from a textgen checkpoint) and ``translate`` (English -> Spanish) to the CLI."""
    p = sub.add_parser("generate", help="sample text from a textgen checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a directory written by 'train textgen --save'")
    p.add_argument("--prime", default=textgen.PRIME, help=f"the text to continue (default {textgen.PRIME!r})")
    p.add_argument("--length", type=int, default=textgen.SAMPLE_LENGTH, metavar="N",
                   help=f"tokens (characters or words) to generate (default {textgen.SAMPLE_LENGTH})")
    p.add_argument("--temperature", type=float, default=textgen.TEMPERATURE, metavar="T",
                   help=f"softmax temperature; 0 is greedy (default {textgen.TEMPERATURE})")
    p.add_argument("--top-k", type=int, metavar="K", help="sample only among the K most probable tokens")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the sampler (default: a fresh one each run)")
    p.add_argument("--backend", metavar="NAME", help="backend name or comma list (default: selected as usual)")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("translate", help="translate English lines to Spanish with a translation checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a directory written by 'train translation --save'")
    p.add_argument("input", nargs="?", default="-", metavar="FILE|-", help="English lines (default: standard input)")
    p.add_argument("--beam", type=int, default=translation.DECODING["beam_size"], metavar="K",
                   help=f"beam width; 1 is greedy (default {translation.DECODING['beam_size']})")
    p.add_argument("--backend", metavar="NAME", help="backend name or comma list (default: selected as usual)")
    p.set_defaults(func=cmd_translate)


def cmd_generate(args) -> int:
    """Print the prime and the text sampled after it."""
    if args.length < 0:
        raise ValueError(f"--length must be >= 0, got {args.length}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    with one_blas_thread():
        print(textgen.generate(args.checkpoint, args.prime, args.length, args.temperature, args.top_k, args.seed,
                               backend=args.backend))
    return 0


def cmd_translate(args) -> int:
    """Read English lines from FILE or standard input and print one Spanish line for each."""
    if args.beam < 1:
        raise ValueError(f"--beam must be >= 1, got {args.beam}")
    if args.input == "-":
        text = sys.stdin.read()
    else:
        with open(args.input, encoding="utf-8") as f:
            text = f.read()
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    with one_blas_thread():
        sentences = translation.translate(args.checkpoint, lines, args.beam, backend=args.backend)
    for sentence in sentences:
        print(sentence)
    return 0
