"""Files written atomically: a crash mid-write leaves the previous file intact."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path, data: bytes | str):
    """Write ``data`` to a temporary file next to ``path``, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
