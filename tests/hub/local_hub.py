"""A local stand-in for the Hugging Face Hub's file endpoint, to test real downloads without the network.

It answers what `huggingface_hub.hf_hub_download` asks: HEAD and GET of /ORG/REPO/resolve/REVISION/FILE with
the commit (X-Repo-Commit), ETag and size headers, and the Hub's 404 error codes (RepoNotFound, EntryNotFound,
RevisionNotFound). Point HF_ENDPOINT at `url`.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class LocalHub:
    """Serve folders as model repositories, one commit each; `requests` records (method, path) of every call."""

    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, bytes]]] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def add(self, repo: str, folder: Path, commit: str) -> None:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        self.repos[repo] = (commit, files)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((req.command, req.path))
        parts = unquote(req.path.split("?")[0]).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(req, 404, "RepoNotFound")
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo not in self.repos:
            return self._error(req, 401, "RepoNotFound")  # the Hub answers an unknown repo like a private one
        commit, files = self.repos[repo]
        if revision not in ("main", commit):
            return self._error(req, 404, "RevisionNotFound")
        if name not in files:
            return self._error(req, 404, "EntryNotFound")
        data = files[name]
        req.send_response(200)
        req.send_header("X-Repo-Commit", commit)
        req.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if body:
            req.wfile.write(data)

    @staticmethod
    def _error(req: BaseHTTPRequestHandler, status: int, code: str) -> None:
        req.send_response(status)
        req.send_header("X-Error-Code", code)
        req.send_header("X-Error-Message", code)
        req.send_header("Content-Length", "0")
        req.end_headers()
