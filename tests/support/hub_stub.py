"""A stub of the Hugging Face Hub's file API on loopback, enough for huggingface_hub's list and download.

``HubStub({"org/repo": {"file.gguf": b"..."}})`` serves ``GET /api/models/<repo>/tree/<rev>`` (the file
list), ``HEAD``/``GET /<repo>/resolve/<rev>/<file>`` (with the commit and ETag headers the client needs)
and a RepoNotFound 404 for anything else. ``requests`` records each request line.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubStub:
    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_HEAD(self) -> None:
                stub._answer(self, with_body=False)

            def do_GET(self) -> None:
                stub._answer(self, with_body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, with_body: bool) -> None:
        path = handler.path.split("?")[0]
        self.requests.append(f"{handler.command} {path}")
        for repo, files in self.repos.items():
            if path.startswith(f"/api/models/{repo}/tree/"):
                listing = [
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in files.items()
                ]
                return _send(
                    handler,
                    200,
                    json.dumps(listing).encode(),
                    with_body,
                    {"Content-Type": "application/json"},
                )
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/", 1)[1]
                if name not in files:
                    return _send(handler, 404, b"", with_body, {"X-Error-Code": "EntryNotFound"})
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(files[name]).hexdigest()}"',
                           "Content-Type": "application/octet-stream"}  # fmt: skip
                return _send(handler, 200, files[name], with_body, headers)
        _send(handler, 404, b'{"error": "Repository not found"}', with_body, {"X-Error-Code": "RepoNotFound"})


def _send(
    handler: BaseHTTPRequestHandler, code: int, data: bytes, with_body: bool, headers: dict[str, str]
) -> None:
    handler.send_response(code)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if with_body:
        handler.wfile.write(data)
