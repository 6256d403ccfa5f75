"""Where files may go, and writing them so that a failure leaves nothing half-written.

* :func:`inside`: a user-chosen name joined onto a folder, refused when it resolves outside it
  (``..``, absolute paths, symlinks leading out), as ComfyUI refuses saving outside its output folder.
* :func:`replacing`: write to a temporary name next to the target and rename it into place only
  when the write succeeded.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutsideFolderError(ValueError):
    """A path that leaves the folder it must stay in."""


def inside(folder: str | Path, name: str | Path, what: str = "file") -> Path:
    """``folder / name``, resolved (symlinks followed), refused unless it lies within ``folder``."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise OutsideFolderError(f"{what} {str(name)!r} leads outside the folder {root}; use a name within it")
    return path


def check_parent_is_folder(path: Path) -> None:
    """Refuse a target whose parent path exists as a plain file (it could never be created)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"{path}: cannot be created because {parent} is a file, not a folder")
            return


@contextmanager
def replacing(target: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``target`` (same suffix) to write; renamed onto ``target``
    when the block succeeds, removed when it fails."""
    target = Path(target)
    check_parent_is_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        # after the write: a writer that replaces the file (safetensors does) would bring back mkstemp's 0600
        temporary.chmod(0o666 & ~_umask())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def replacing_folder(target: str | Path) -> Iterator[Path]:
    """Like :func:`replacing` for a folder: a fresh temporary folder renamed onto ``target`` (which
    must not exist or be empty) when the block succeeds."""
    target = Path(target)
    check_parent_is_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    temporary.chmod(0o777 & ~_umask())
    try:
        yield temporary
        if target.is_dir():
            target.rmdir()
        os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def copy_if_missing(source: Path, target: Path) -> bool:
    """Copy ``source`` to ``target`` unless something (a file, a folder, a symlink, even a broken
    one) is already there; never overwrites and never writes through a symlink."""
    if os.path.lexists(target):
        return False
    try:
        with source.open("rb") as reading, target.open("xb") as writing:  # "x": O_EXCL, fails on any entry
            shutil.copyfileobj(reading, writing)
    except FileExistsError:
        return False
    return True
