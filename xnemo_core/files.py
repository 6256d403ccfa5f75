"""Where files may go, and writing them so that a failure leaves nothing half-written.

* :func:`inside`: a user-chosen name joined onto a folder, refused when it resolves outside it
  (``..``, absolute paths, symlinks leading out), as ComfyUI refuses saving outside its output folder.
* :func:`replacing`: write to a temporary name next to the target and rename it into place only
  when the write succeeded.
* :func:`check_output_path`: before any work, refuse an output that is one of the inputs (or holds
  one, or lies in a folder that must stay untouched), and prove that it can be created.
"""

import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class OutsideFolderError(ValueError):
    """A path that leaves the folder it must stay in."""


class OutputError(ValueError):
    """An output path that cannot or must not be written; the message names the user's path."""


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
    when the block succeeds, removed when it fails or a stop signal comes (even one that comes while
    the temporary file is being made or removed)."""
    target = Path(target)
    check_parent_is_folder(target)
    temporary = None
    try:
        with signals_held(), _named_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = _temporary_file(target)
        yield temporary
        with signals_held() as stopped, _named_errors(target):
            # after the write: a writer that replaces the file (safetensors does) would bring back mkstemp's 0600
            temporary.chmod(user_mode(0o666))
            if not stopped:  # a signal while the mode was set: the output stays unwritten
                os.replace(temporary, target)
    finally:
        with signals_held():
            if temporary is not None:
                temporary.unlink(missing_ok=True)


@contextmanager
def replacing_folder(target: str | Path) -> Iterator[Path]:
    """Like :func:`replacing` for a folder: a fresh temporary folder renamed onto ``target`` (which
    must not exist or be empty) when the block succeeds."""
    target = Path(target)
    check_parent_is_folder(target)
    temporary = None
    try:
        with signals_held(), _named_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = _temporary_folder(target)
        yield temporary
        with signals_held() as stopped, _named_errors(target):
            if not stopped:
                if target.is_dir():
                    target.rmdir()
                os.replace(temporary, target)
    finally:
        with signals_held():
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)


@contextmanager
def signals_held() -> Iterator[list[int]]:
    """Hold the stop signals (SIGINT, SIGTERM, SIGHUP) for the few file operations that must not be
    cut in half (a temporary name made and noted, renamed, removed): yields the list of those that
    came, and lets their handlers run when the block ends. Outside the main thread, where Python runs
    no signal handler, nothing is held."""
    received: list[int] = []
    numbers = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    held = [number for number in numbers if signal.getsignal(number) not in (signal.SIG_IGN, None)]
    try:
        previous = {number: signal.signal(number, lambda number, _: received.append(number)) for number in held}
    except ValueError:
        yield received
        return
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            _deliver(received[0], previous[received[0]])


def _deliver(number: int, handler) -> None:
    if callable(handler):
        handler(number, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), number)


def _temporary_file(target: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent)
    try:
        os.close(handle)
    except BaseException:  # Ctrl-C or SIGTERM right after the creation: the caller never learns the name
        os.unlink(name)
        raise
    return Path(name)


def _temporary_folder(target: Path) -> Path:
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    temporary.chmod(user_mode(0o777))
    return temporary


@contextmanager
def _named_errors(target: Path) -> Iterator[None]:
    """An ``OSError`` (no permission, read-only file system, disk full) as an :class:`OutputError`
    that names ``target``, not the temporary name the writer used."""
    try:
        yield
    except OSError as error:
        raise OutputError(f"{target}: cannot be written here ({error.strerror or error})") from None


def check_output_path(
    target: str | Path, inputs: Iterable[str | Path] = (), untouchable: Iterable[str | Path] = (), folder: bool = False
) -> Path:
    """Refuse ``target`` before any work unless writing it is safe and possible: it may not be,
    hold or replace any of ``inputs`` (compared after resolving links, hard links included), nor lie
    within an ``untouchable`` folder (a model, the pack's shipped files); and a temporary file (or
    folder) must be creatable beside it, which is created and removed again here."""
    if str(target).strip() in ("", "-"):
        raise OutputError(f"{str(target)!r} is not an output path (writing to standard output is not supported)")
    target = Path(target)
    resolved = target.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if _same_file(resolved, source) or resolved in source.parents:
            raise OutputError(
                f"{target}: is {'' if _same_file(resolved, source) else 'a folder holding '}the input {given}; "
                "an output never replaces an input: choose another output path"
            )
    for kept in untouchable:
        root = Path(kept).resolve()
        if resolved == root or root in resolved.parents:
            raise OutputError(f"{target}: lies within {kept}, which is never written to; choose another output path")
    check_parent_is_folder(target)
    _probe_writable(target, folder)
    return target


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _probe_writable(target: Path, folder: bool) -> None:
    """Create (and remove) the temporary name a write would use, and any missing parent folders."""
    missing = [parent for parent in reversed(target.parents) if not parent.exists()]
    with signals_held(), _named_errors(target):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if folder:
                _temporary_folder(target).rmdir()
            else:
                _temporary_file(target).unlink()
        finally:
            for parent in reversed(missing):
                if parent.is_dir():
                    parent.rmdir()


def publish(finished: Path, target: Path) -> None:
    """Rename a finished file (a download's partial file) onto ``target`` with the mode a file the
    user creates gets: temporary files are often 0600, which a ComfyUI running as another user could
    not read. (:func:`replacing` does the same between its own signal checks.)"""
    finished.chmod(user_mode(0o666))
    os.replace(finished, target)


def user_mode(mode: int) -> int:
    """``mode`` less the umask: what a file (0o666) or folder (0o777) the user creates gets."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


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
