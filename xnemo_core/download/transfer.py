"""Moving one file's bytes onto the disk so that no stop loses them: a transfer writes a hidden
``.NAME.partial`` file beside its target, resumes it with a ranged request on the next attempt or
the next run, checks the size (and the SHA-256 where the server names it), and only then renames
it into place with the user's usual file mode.
"""

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import requests

from ..files import publish

Report = Callable[[str, int, int | None], None]
"""``report(file name, bytes so far, total bytes or None)``; may raise to stop the transfer (its
bytes are kept for the next run)."""

CHUNK = 1 << 16
"""Bytes read and written at a time: a broken transfer loses at most this much."""
RETRIES = 3
TIMEOUT = 60
SHA256 = re.compile(r"[0-9a-f]{64}")


class TransferError(ValueError):
    """A transfer that cannot go on; the message names the file and says what happened to its bytes."""


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def transfer(
    url: str,
    target: Path,
    size: int | None = None,
    digest: str | None = None,
    headers: dict[str, str] | None = None,
    report: Report | None = None,
) -> Path:
    """Fetch ``url`` into ``target`` (whose folder exists), resuming the partial file an earlier
    attempt left. ``size`` and ``digest`` (a SHA-256 in hex; other ETags are ignored) are what the
    server announced; a finished file that differs is removed and refused."""
    partial = partial_path(target)
    for attempt in range(RETRIES + 1):
        try:
            _fetch_rest(url, partial, size, headers or {}, report, target.name)
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
            if attempt == RETRIES:
                raise
    _check_finished(partial, target, size, digest)
    publish(partial, target)
    return target


def _fetch_rest(url: str, partial: Path, size: int | None, headers: dict, report: Report | None, name: str) -> None:
    start = partial.stat().st_size if partial.exists() else 0
    if size is not None and start >= size:
        if start == size:
            return
        partial.unlink()  # longer than the file: not a part of it
        start = 0
    ranged = headers | ({"Range": f"bytes={start}-"} if start else {})
    with requests.get(url, headers=ranged, stream=True, timeout=TIMEOUT, allow_redirects=True) as response:
        if response.status_code == 416 and start:  # nothing left past the partial file's end
            return
        response.raise_for_status()
        if start and response.status_code != 206:  # the server ignored the range: start again
            start = 0
        total = size if size is not None else _announced_length(response, start)
        with partial.open("ab" if start else "wb") as file:
            done = start
            for chunk in response.iter_content(CHUNK):
                file.write(chunk)
                done += len(chunk)
                if report:
                    report(name, done, total)


def _announced_length(response: requests.Response, start: int) -> int | None:
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _check_finished(partial: Path, target: Path, size: int | None, digest: str | None) -> None:
    got = partial.stat().st_size
    if size is not None and got != size:
        raise TransferError(
            f"{target.name}: the transfer stopped at {got} of {size} bytes; the bytes received are kept, and "
            "running the download again resumes from them"
        )
    if digest and SHA256.fullmatch(digest.lower()) and _sha256(partial) != digest.lower():
        partial.unlink()
        raise TransferError(
            f"{target.name}: the bytes received do not match the file's published SHA-256 (the server's copy "
            "changed, or the transfer was damaged); they were removed: run the download again"
        )


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            hasher.update(block)
    return hasher.hexdigest()
