"""The data every task uses by default, shipped in the package (see each folder's SOURCE.md), and a text reader.

Bigger corpora (the whole UD English-EWT train set, every Tatoeba English-Spanish pair) are downloaded on request
by ``rnnbackends data fetch NAME`` (see ``rnnbackends.datasets.remote``).
"""
from __future__ import annotations

import gzip
import lzma
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLED = {"sentiment": HERE / "sentiment",                                        # folder of *_labelled.txt
           "timeseries": HERE / "timeseries" / "airline-passengers.csv",
           "tagging": HERE / "pos",                                                # *train*/*dev*/*test*.conllu.xz
           "textgen": HERE / "text" / "input.txt.xz",
           "translation": HERE / "translation" / "spa-eng.first40000.txt.xz",
           "speech": HERE / "speech"}                                              # transcripts.tsv + audio
OPENERS = {".gz": gzip.open, ".xz": lzma.open}
COMPRESSED = tuple(OPENERS)


def default_data(task):
    """The bundled file or folder that task ``task`` reads when no ``--data`` is given."""
    if task not in BUNDLED:
        raise ValueError(f"no bundled data for {task!r}; tasks with bundled data: {', '.join(BUNDLED)}")
    return BUNDLED[task]


def read_text(path):
    """The whole UTF-8 text of a plain, ``.gz`` or ``.xz`` file, line endings untouched (split it on ``"\\n"``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: is a folder, not a file" if path.is_dir() else f"{path}: no such file")
    opener = OPENERS.get(path.suffix, open)
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ValueError(f"{path}: cannot read it ({exc}); is it a complete {path.suffix or 'text'} file?") from None
