"""A minimal RFC 6455 websocket client for the dashboard (there is no websockets package).

Enough to speak to ``/ws/`` as the page does: a handshake with a token header or a
session cookie, text frames in, the server's pings answered. A reader thread stamps
each frame with ``time.time()`` the moment its last byte arrives, so the latency
figures do not include the benchmark's own processing. The tests use it too.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from typing import Any


class Client:
    def __init__(
        self,
        port: int,
        token: str | None = None,
        *,
        cookie: str | None = None,
        path: str = "/ws/",
        timeout: float = 10.0,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        auth = f"Authorization: Token {token}\r\n" if token is not None else ""
        if cookie is not None:
            auth += f"Cookie: {cookie}\r\n"
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
                f"{auth}\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head[:200]!r}")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]
        self.sock.settimeout(None)  # the reader thread blocks until a frame or close
        self.frames: list[tuple[float, dict[str, Any]]] = []  # (received at, frame)
        self.error: BaseException | None = None
        self._taken = 0  # frames already returned by next()
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._reader, name="ws-reader", daemon=True)
        self._thread.start()

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server went away")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _send(self, opcode: int, data: bytes) -> None:
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            size = bytes([0x80 | n])
        elif n < 65536:
            size = bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            size = bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        with self._send_lock:
            self.sock.sendall(bytes([0x80 | opcode]) + size + mask + masked)

    def send(self, message: dict[str, Any]) -> None:
        self._send(0x1, json.dumps(message).encode())

    def _reader(self) -> None:
        message = b""
        try:
            while True:
                first, second = self._read(2)
                n = second & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._read(8))[0]
                data = self._read(n)
                opcode = first & 0x0F
                if opcode == 0x8:
                    self.error = ConnectionError(f"closed by the server: {data!r}")
                    return
                if opcode == 0x9:
                    self._send(0xA, data)  # answer the server's keep-alive ping
                    continue
                message += data
                if first & 0x80 and opcode in (0x0, 0x1):
                    received = time.time()
                    self.frames.append((received, json.loads(message)))
                    message = b""
        except (OSError, ValueError) as exc:
            self.error = exc

    def wait_for(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, frame in self.frames:
                if frame.get("type") == kind:
                    return frame
            if self.error is not None:
                raise ConnectionError(f"websocket reader stopped: {self.error!r}")
            time.sleep(0.02)
        raise TimeoutError(f"no {kind} frame within {timeout} s")

    def next(self, kind: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame not returned yet (skipping those of other types, if kind is given).

        Raises ConnectionError once the connection is gone and every frame was taken.
        """
        deadline = time.monotonic() + timeout
        while True:
            while self._taken < len(self.frames):
                frame = self.frames[self._taken][1]
                self._taken += 1
                if kind is None or frame.get("type") == kind:
                    return frame
            if self.error is not None:
                raise ConnectionError(f"websocket reader stopped: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind or 'new'} frame within {timeout} s")
            time.sleep(0.01)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(2)
