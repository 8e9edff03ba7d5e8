"""File helpers shared by the package."""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Callable


def atomic_write(path: str | pathlib.Path, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file in the same
    folder, which then replaces ``path`` in one rename. A failure (or an interrupt) removes the
    temporary file and leaves whatever ``path`` held before. Creates the folder."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(pathlib.Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
