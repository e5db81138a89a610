"""Length-prefixed messages over a Unix socket, with deadlines (internal: app.io.lmdb_bags and its reader).

send_bytes(data)                       8-byte little-endian length, then the data
recv_bytes(deadline, limit) -> bytes   EOFError when the peer is gone, TimeoutError past `deadline`
recv_bytes_into(buffer, deadline)      a message of exactly len(buffer) bytes, written into `buffer`
"""

from __future__ import annotations

import math
import select
import socket
import struct
import time


class Channel:
    """One end of a socketpair carrying framed messages; `deadline` is a time.monotonic() value (inf = none)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send_bytes(self, data: bytes | memoryview) -> None:
        self.sock.sendall(struct.pack("<Q", len(data)))
        self.sock.sendall(data)

    def _wait(self, deadline: float) -> None:
        left = None if math.isinf(deadline) else deadline - time.monotonic()
        if left is not None and (left <= 0 or not select.select([self.sock], [], [], left)[0]):
            raise TimeoutError

    def _exact(self, buffer: bytearray | memoryview, deadline: float) -> None:
        """Fill `buffer` completely. Views are released deterministically (`with`), even on an exception."""
        with memoryview(buffer) as view:
            got = 0
            while got < len(view):
                self._wait(deadline)
                with view[got:] as part:
                    n = self.sock.recv_into(part, min(len(part), 1 << 22))
                if n == 0:
                    raise EOFError
                got += n

    def _length(self, deadline: float) -> int:
        head = bytearray(8)
        self._exact(head, deadline)
        return int(struct.unpack("<Q", head)[0])

    def recv_bytes(self, deadline: float = math.inf, limit: int = 2**26) -> bytes:
        n = self._length(deadline)
        if n > limit:
            raise EOFError(f"message of {n} bytes is larger than {limit}")
        out = bytearray(n)
        self._exact(out, deadline)
        return bytes(out)

    def recv_bytes_into(self, buffer: memoryview, deadline: float = math.inf) -> None:
        if self._length(deadline) != len(buffer):
            raise EOFError("message size differs from the announced shape")
        self._exact(buffer, deadline)

    def close(self) -> None:
        self.sock.close()
