"""A stand-in for the Hugging Face Hub: a real HTTP server in a thread speaking the endpoints huggingface_hub uses.

* ``GET /api/models/{org}/{name}/revision/{rev}``: model info (the commit a revision resolves to);
* ``GET /api/models/{org}/{name}/tree/{commit}?recursive=True``: the file list, with each file's git blob id
  and, for LFS files (``*.bin``, ``*.safetensors``, ``*.onnx``), its sha256;
* ``HEAD``/``GET /{org}/{name}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (the sha256 of LFS files,
  the blob id of others), ``Content-Length``; GET honours ``Range: bytes=N-`` (206).

Faults a test can ask for: ``drop_once`` (paths whose next GET sends the headers and half the body,
then closes the connection), ``cut_off`` (paths whose GETs send the headers and no body at all until
removed: the network is gone), ``corrupt`` (paths served with one byte changed, while the listing and
the ETag keep the true digests).  Every request is logged in :attr:`requests`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".bin", ".safetensors", ".onnx")


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    refs: dict[str, str] = field(default_factory=dict)
    """Branch or tag name -> commit (the commit itself always resolves)."""

    def resolve(self, rev: str) -> str | None:
        return self.commit if rev == self.commit else self.refs.get(rev)


@dataclass
class Request:
    method: str
    path: str
    range: str | None


class StandInHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.drop_once: set[str] = set()
        self.corrupt: set[str] = set()
        self.cut_off: set[str] = set()
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._serve(self, head=True)

            def do_GET(self):
                hub._serve(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> str:
        commit = hashlib.sha1(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}).encode()).hexdigest()
        self.repos[repo_id] = Repo(dict(files), commit, {r: commit for r in refs})
        return commit

    def start(self) -> StandInHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def downloads(self, path_suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(path_suffix)]

    # -- the endpoints --------------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlsplit(h.path)
        path = unquote(url.path)
        with self._lock:
            self.requests.append(Request(h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo_id, what, rev = "/".join(parts[2:4]), parts[4], parts[5]
            repo = self.repos.get(repo_id)
            if repo is None:
                return self._error(h, 404, "RepoNotFound", head)
            commit = repo.resolve(rev)
            if commit is None:
                return self._error(h, 404, "RevisionNotFound", head)
            if what == "revision":
                body = {"id": repo_id, "sha": commit, "private": False, "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
            else:
                body = [self._tree_item(p, data) for p, data in sorted(repo.files.items())]
            return self._json(h, body, head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            repo = self.repos.get(repo_id)
            if repo is None:
                return self._error(h, 404, "RepoNotFound", head)
            commit = repo.resolve(rev)
            if commit is None:
                return self._error(h, 404, "RevisionNotFound", head)
            if file not in repo.files:
                return self._error(h, 404, "EntryNotFound", head)
            return self._file(h, repo, commit, file, head)
        return self._error(h, 404, "NotFound", head)

    @staticmethod
    def _tree_item(path: str, data: bytes) -> dict:
        item = {"type": "file", "path": path, "size": len(data), "oid": blob_id(data)}
        if path.endswith(LFS_SUFFIXES):
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return item

    def _file(self, h, repo: Repo, commit: str, file: str, head: bool) -> None:
        data = repo.files[file]
        etag = hashlib.sha256(data).hexdigest() if file.endswith(LFS_SUFFIXES) else blob_id(data)
        if file in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes=") and not head:
            start = int(rng[len("bytes="):].split("-")[0] or 0)
        body = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", commit)
        h.send_header("ETag", f'"{etag}"')
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if head:
            return
        with self._lock:
            drop = file in self.drop_once
            self.drop_once.discard(file)
            cut = not drop and file in self.cut_off
        if drop or cut:
            h.wfile.write(body[: len(body) // 2] if drop else b"")
            h.wfile.flush()
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        h.wfile.write(body)

    @staticmethod
    def _json(h, body, head: bool) -> None:
        data = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    @staticmethod
    def _error(h, status: int, code: str, head: bool) -> None:
        data = json.dumps({"error": code}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
