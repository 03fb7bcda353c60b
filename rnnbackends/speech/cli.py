"""``rnnbackends data make speech``: synthesise a spoken-digit corpus with eSpeak NG."""
from __future__ import annotations

import sys
from pathlib import Path

from .corpus import make_corpus, voice_split
from .synth import Synthesizer


def positive(value):
    """An argparse type: an integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        import argparse
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return number


def add_make_command(data_sub):
    """Add ``make`` to the sub-parsers of ``data``."""
    p = data_sub.add_parser("make", help="synthesise a corpus (needs pip install 'rnnbackends[speech]')")
    p.add_argument("corpus", choices=("speech",), help="speech: spoken digit strings from eSpeak NG voices")
    p.add_argument("--out", default="speech-corpus", metavar="DIR", help="folder to write (default speech-corpus)")
    p.add_argument("--size", type=positive, default=2000, metavar="N", help="utterances (default 2000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default 0); the same seed, the same corpus")
    p.add_argument("--rate", type=positive, default=16000, metavar="HZ", help="sample rate (default 16000)")
    p.add_argument("--jobs", type=positive, default=1, metavar="N", help="processes synthesising at once (default 1)")
    p.add_argument("--bundle", action="store_true",
                   help="one compressed speech.npz (8-bit) instead of WAV files, like the corpus in the package")
    p.set_defaults(func=cmd_make)


def cmd_make(args) -> int:
    """Write the corpus and say what is in it."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; give a folder")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")

    def progress(done, total):
        """A counter on standard error."""
        if done % 500 == 0 or done == total:
            print(f"\r{done}/{total} utterances", end="\n" if done == total else "", file=sys.stderr)
    utterances = make_corpus(out, args.size, args.seed, args.rate, args.bundle, args.jobs, progress)
    voices = voice_split(Synthesizer.shared().variants())
    for split in ("train", "valid", "test"):
        count = sum(u.split == split for u in utterances)
        print(f"{split}: {count} utterances; voice variants: {', '.join(voices[split])}")
    print(f"wrote {out / 'transcripts.tsv'} and the audio")
    return 0
