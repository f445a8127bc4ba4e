"""The service the proxy tests reach: a small HTTP/1.1 server on a pod's loopback IP.

``GET /who`` names the replica; ``GET .../path`` returns the path it was sent
(``strip_prefix``); ``POST /echo`` and ``POST .../chat/completions`` return the body
they got;
``GET /stream`` sends one chunk at once and the next only after the gate
file exists, so a test can tell a streamed response from a buffered one.

Run as ``python tests/ssh/app.py --bind IP --port N --name NAME --gate FILE``.
"""

from __future__ import annotations

import argparse
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_GATE_WAIT_S = 30.0  # longest a /stream holds its second chunk back
_GATE_POLL_S = 0.02


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--gate", type=Path, required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked responses
        # Headers and body leave in separate writes: without TCP_NODELAY, Nagle and
        # delayed ACKs hold every keep-alive response back ~40 ms.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path == "/who":
                self._send(200, args.name.encode())
            elif self.path == "/stream":
                self._stream()
            elif self.path.endswith("/path"):
                self._send(200, self.path.encode())  # what the proxy sent on (strip_prefix)
            else:
                self._send(404, b"not here\n")

        def do_POST(self) -> None:
            if self.path.endswith("/chat/completions"):  # an OpenAI server, as far as routing goes
                self._send(200, self._read_body(), extra={"X-Seen-Path": self.path})
                return
            if self.path != "/echo":
                self._send(404, b"not here\n")
                return
            seen = {
                "X-Seen-Host": self.headers["Host"],
                "X-Seen-Authorization": "yes" if "Authorization" in self.headers else "no",
                "X-Seen-Prefix": self.headers.get("X-Forwarded-Prefix", ""),
            }
            self._send(200, self._read_body(), extra=seen)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(f"first from {args.name}\n".encode())
            deadline = time.monotonic() + _GATE_WAIT_S
            while not args.gate.exists() and time.monotonic() < deadline:
                time.sleep(_GATE_POLL_S)
            self._chunk(b"second\n")
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _read_body(self) -> bytes:
            if "Content-Length" in self.headers:
                return self.rfile.read(int(self.headers["Content-Length"]))
            body = b""
            while True:  # chunked
                size = int(self.rfile.readline().strip(), 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    return body
                body += chunk

        def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *log_args: object) -> None:
            print(f"{self.address_string()} {format % log_args}", flush=True)  # noqa: T201

    ThreadingHTTPServer((args.bind, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
