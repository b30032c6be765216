# SPDX-License-Identifier: Apache-2.0
"""A small forward proxy, as organisations put between their servers and the internet.

Plain TCP on 127.0.0.1. CONNECT host:port opens a tunnel (answered "200 Connection
established", then bytes relayed both ways); any other request must be in absolute form
("GET http://host:port/path HTTP/1.1"): it is passed on to host:port in origin form and
the answer relayed back until either side closes: one request per connection, as an
HTTP/1.0 proxy serves them (Connection: close both ways, whatever the client asked for).
Every request line is recorded.
refuse_connect makes CONNECT answer "403 Forbidden" instead.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from typing import Optional

HOST = "127.0.0.1"


class EgressProxy:
    def __init__(self, refuse_connect: bool = False):
        self.refuse_connect = refuse_connect
        self.requests: list[str] = []  # request lines, in arrival order
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def request_lines(self) -> list[str]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass
        self._accepter.join(5)
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> "EgressProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(t)
            t.start()

    @staticmethod
    def _read_head(sock: socket.socket) -> Optional[bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
        return data

    @staticmethod
    def _closing_head(fields: bytes) -> bytes:
        """Header fields (and whatever followed them) with the connection's own headers
        replaced by Connection: close."""
        head, _, after = fields.partition(b"\r\n\r\n")
        hop_by_hop = (b"connection:", b"keep-alive:", b"proxy-connection:")
        kept = [f for f in head.split(b"\r\n") if f and not f.lower().startswith(hop_by_hop)]
        return b"\r\n".join(kept + [b"Connection: close", b"", b""]) + after

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(30)
        upstream = None
        try:
            head = self._read_head(client)
            if head is None:
                return
            line, _, rest = head.partition(b"\r\n")
            method, target, version = line.decode("latin-1").split(" ", 2)
            with self._lock:
                self.requests.append(f"{method} {target}")
            if method == "CONNECT":
                if self.refuse_connect:
                    client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                url = urllib.parse.urlsplit(target)
                upstream = socket.create_connection((url.hostname, url.port or 80), timeout=30)
                origin_form = (url.path or "/") + (f"?{url.query}" if url.query else "")
                upstream.sendall(f"{method} {origin_form} {version}\r\n".encode("latin-1")
                                 + self._closing_head(rest))
                answer = self._read_head(upstream)
                if answer is None:
                    return
                status, _, fields = answer.partition(b"\r\n")
                client.sendall(status + b"\r\n" + self._closing_head(fields))
            self._relay(client, upstream)
        except (OSError, ValueError) as e:
            if not self._closed:
                with self._lock:
                    self.errors.append(repr(e))
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    @staticmethod
    def _relay(a: socket.socket, b: socket.socket) -> None:
        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        other = threading.Thread(target=pump, args=(b, a), daemon=True)
        other.start()
        pump(a, b)
        other.join(30)
