"""Files written atomically: a crash mid-write leaves the previous file intact."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path, data: bytes | str):
    """Write ``data`` to a temporary file next to ``path``, flush it to disk, then rename it over ``path``.

    The file gets the mode an ordinary ``open(path, "w")`` gives a new file: 0666 less the user's umask.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
