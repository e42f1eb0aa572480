"""A static file server on loopback for a `cpubuild index` folder, negotiating PEP 691 JSON like PyPI.

GET of a folder with ``Accept: application/vnd.pypi.simple.v1+json`` answers its index.json; otherwise
the folder's index.html, as any static server would. `served` records (kind, path) of every answer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from cpubuild.index import JSON_MEDIA_TYPE


class _Handler(SimpleHTTPRequestHandler):
    server: _Server

    def send_head(self) -> Any:
        path = self.translate_path(self.path)
        page = os.path.join(path, "index.json")
        wants_json = JSON_MEDIA_TYPE in self.headers.get("Accept", "")
        if self.path.endswith("/") and wants_json and self.server.negotiate and os.path.isfile(page):
            stream: BinaryIO = open(page, "rb")  # the base class closes what send_head returns
            self.send_response(200)
            self.send_header("Content-Type", JSON_MEDIA_TYPE)
            self.send_header("Content-Length", str(os.fstat(stream.fileno()).st_size))
            self.end_headers()
            self.server.served.append(("json", self.path))
            return stream
        self.server.served.append(("html" if self.path.endswith("/") else "file", self.path))
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    negotiate = True
    served: list[tuple[str, str]]


@contextlib.contextmanager
def serve(root: Path, negotiate: bool = True) -> Iterator[_Server]:
    """Serve `root` on 127.0.0.1 (a free port) for the duration of the block; `url` is its address."""
    server = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.negotiate, server.served = negotiate, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def url(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/simple"
