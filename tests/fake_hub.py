"""A local stand-in for the Hugging Face Hub (what ``hf_hub_download`` asks of it) and for a plain
file server (in place of Google Drive), so that download tests never reach the internet.

Files are served by URL path: ``/{repo_id}/resolve/main/{file}`` for Hub repositories, any other
path for plain files. HEAD and ranged GET (resume) are answered as the Hub does; a repository can
be gated (a bearer token needed) and a file can break off halfway the first time it is sent.
"""

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.gated: dict[str, str] = {}
        """repo_id → the token it accepts."""
        self.break_once: set[str] = set()
        self.status: dict[str, int] = {}
        """path → an HTTP error status answered instead of the file."""
        self.slow: dict[str, float] = {}
        """path → seconds to wait before each MiB sent (a slow line, to interrupt a transfer midway)."""
        self.requests: list[tuple[str, str, str | None]] = []
        """(method, path, Range header) of every request, in order."""
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_repo(self, repo_id: str, folder: Path, names: list[str]) -> None:
        """Serve ``folder / name`` as ``name`` of Hub repository ``repo_id``."""
        for name in names:
            self.files[f"/{repo_id}/resolve/main/{name}"] = (folder / name).read_bytes()

    def add_files(self, prefix: str, folder: Path, names: list[str]) -> None:
        for name in names:
            self.files[f"{prefix}/{name}"] = (folder / name).read_bytes()

    def gets(self, path_end: str) -> list[str | None]:
        """The Range header of each GET whose path ends with ``path_end``."""
        return [ranged for method, path, ranged in self.requests if method == "GET" and path.endswith(path_end)]

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.server.shutdown()
        self.server.server_close()


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            hub.requests.append((self.command, path, self.headers.get("Range")))
            repo = next((r for r in hub.gated if path.startswith(f"/{r}/")), None)
            if repo and self.headers.get("Authorization") != f"Bearer {hub.gated[repo]}":
                return self._error(
                    401, "GatedRepo", f"Access to model {repo} is restricted and you are not in the authorized list."
                )
            if path in hub.status:
                return self._error(hub.status[path], "", "a fault")
            if path not in hub.files:
                return self._error(404, "EntryNotFound", f"{path} does not exist")
            data = hub.files[path]
            start = _range_start(self.headers.get("Range"))
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                return
            if path in hub.break_once and not start:
                hub.break_once.discard(path)
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            for offset in range(start, len(data), 1 << 20):
                time.sleep(hub.slow.get(path, 0))
                self.wfile.write(data[offset : offset + (1 << 20)])

        def _error(self, status: int, code: str, message: str) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    return int(header[len("bytes=") :].split("-", 1)[0] or 0)
