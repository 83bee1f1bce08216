"""A stand-in for a Kubernetes API server on 127.0.0.1, for the client's unit tests (no lab).

FakeAPI serves JSON from its routes (path -> object, or a callable given the request), after
scripted faults: each request first takes the next fault of the queue, if any (an HTTP status with
headers, a dropped connection, a pause). It records every request, and can require a bearer
token. Run as a script (`python fakeapi.py`), it serves the default routes in its own process and
prints its port: a process that a test can freeze with SIGSTOP, as the lab's kube-apiserver."""
from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DEFAULT_ROUTES = {
    "/version": {"major": "1", "minor": "36", "gitVersion": "v1.36.3"},
    "/api": {"versions": ["v1"]},
    "/apis": {"groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1"}]}]},
}


def status(code: int, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "code": code}


class FakeAPI:
    def __init__(self, routes: dict | None = None, token: str | None = None,
                 tls: ssl.SSLContext | None = None):
        self.routes = dict(DEFAULT_ROUTES if routes is None else routes)
        self.token = token  # when set, another Authorization gets 401
        self.faults: list[tuple] = []
        self.outage_until, self.outage_fault = 0.0, None
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def answer(self, code: int, obj, headers: dict | None = None):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = dict(method=self.command, path=self.path, headers=dict(self.headers),
                              body=body, at=time.monotonic())
                with api.lock:
                    api.requests.append(record)
                    fault = api.faults.pop(0) if api.faults else None
                    if fault is None and time.monotonic() < api.outage_until:
                        fault = api.outage_fault
                if fault is not None:
                    kind = fault[0]
                    if kind == "drop":  # the connection closes without an answer
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if kind == "sleep":
                        time.sleep(fault[1])
                    elif kind == "status":
                        code, headers = fault[1], (fault[2] if len(fault) > 2 else {})
                        self.answer(code, status(code, f"fault {code}"), headers)
                        return
                if api.token and self.headers.get("Authorization") != f"Bearer {api.token}":
                    self.answer(401, status(401, "Unauthorized"))
                    return
                route = api.routes.get(urlsplit(self.path).path)
                if route is None:
                    self.answer(404, status(404, f"{self.path} not found"))
                    return
                result = route(record) if callable(route) else route
                code, obj = result if isinstance(result, tuple) else (200, result)
                self.answer(code, obj)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def fault(self, *faults: tuple) -> None:
        with self.lock:
            self.faults.extend(faults)

    def outage(self, seconds: float, fault: tuple = ("status", 503)) -> None:
        """Every request gets `fault` for the next `seconds`."""
        with self.lock:
            self.outage_until, self.outage_fault = time.monotonic() + seconds, fault

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    with FakeAPI() as fake:
        print(fake.port, flush=True)
        sys.stdin.read()  # until the test closes our stdin
