"""File helpers shared by the package (named ``files``, not ``io``, so as not to shadow the
standard module)."""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Callable, Iterable

from .errors import DatasetError


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


def check_new_dataset_folder(folder: pathlib.Path, files: Iterable[str],
                             folders: Iterable[str], verb: str) -> None:
    """DatasetError unless ``folder`` can take a new dataset: it is absent, or a folder that
    holds none of ``files`` and whose ``folders`` are absent or empty. Checked before anything
    is written, so that an earlier dataset is never mixed with or overwritten by a new one."""
    folder = pathlib.Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{folder}: exists and is not a folder")
    taken = [name for name in files if (folder / name).exists()]
    taken += [f"{name}/" for name in folders
              if (folder / name).is_dir() and any((folder / name).iterdir())]
    if taken:
        raise DatasetError(f"{folder}: already holds {', '.join(taken)}; {verb} into a new "
                           "folder")
