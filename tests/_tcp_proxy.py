"""A loopback TCP proxy that fails the way networks and load balancers do, for the client tests.

`TcpProxy` listens on 127.0.0.1:0 and forwards each accepted connection over a new TCP
connection to its ``target`` (a real replaybuf server). Tests point a `ReplayClient` at
``proxy.address`` and then break the path for real:

- `cut_all`: drop every open connection now.
- `cut_after_responses`: forward N more gRPC response messages server->client, then drop
  that connection at the message boundary. ``cut_after_responses(0)`` before an append loses
  its ack after the server stored the batch. The client may or may not get to read the N
  forwarded messages: gRPC can discard what it had not handed over when the socket closes.
- `fail_streams_after_responses`: forward N more response messages, then end that stream with
  UNAVAILABLE the way an L7 proxy reports a failed upstream (trailers ``grpc-status: 14``) and
  cancel it towards the server. The connection stays up, and the N messages are delivered
  before the status, in order.
- `cut_on_requests`: drop the connection that opens the next request stream, before forwarding
  it; the server never sees that call.
- `refuse`: accept new connections and reset them at once (an unreachable server).
- `hold_responses`: keep server->client bytes back until N request messages went through.

Counters (`request_streams`, `request_messages`, `responses`, `cuts`, ...) say what went past.

Triggers count gRPC messages, not bytes: the HTTP/2 control frames (SETTINGS, WINDOW_UPDATE,
PING) that the two ends exchange interleave nondeterministically, so a byte offset would not
name the same point twice. The proxy therefore reads plaintext HTTP/2 frame headers and, in
DATA frames, the 5-byte gRPC message prefixes. It alters nothing except where a trigger fires:
a DATA frame is cut at a message boundary, and a stream it ends gets a trailers frame (HPACK
literals, which leave the connection's header table alone) and an RST_STREAM to the server.
Over TLS only `cut_all`, `refuse` and the connection counters work.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["TcpProxy"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM = 0, 1, 3
_END_STREAM, _END_HEADERS, _PADDED = 0x1, 0x4, 0x8
_CANCEL = 0x8
_FRAME_HEADER = 9
_MESSAGE_PREFIX = 5  # compressed flag (1 byte) + big-endian length (4 bytes)


@dataclass
class _Frame:
    type: int
    flags: int
    stream: int
    raw: bytes

    @property
    def data(self) -> bytes:
        """A DATA frame's payload without padding."""

        payload = self.raw[_FRAME_HEADER:]
        if self.flags & _PADDED:
            return payload[1 : len(payload) - payload[0]]
        return payload


def _frame(type_: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([type_, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_int(n: int) -> bytes:
    """An HPACK integer with a 7-bit prefix and the Huffman bit clear (RFC 7541, 5.1)."""

    if n < 127:
        return bytes([n])
    out, n = [127], n - 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes(out + [n])


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, new name (RFC 7541, 6.2.2)."""

    return b"\x00" + _hpack_int(len(name)) + name + _hpack_int(len(value)) + value


def _unavailable_trailers(stream: int, headers_sent: bool) -> bytes:
    block = b""
    if not headers_sent:  # a trailers-only response carries the response headers too
        block += _literal(b":status", b"200") + _literal(b"content-type", b"application/grpc")
    block += _literal(b"grpc-status", b"14")  # UNAVAILABLE
    block += _literal(b"grpc-message", b"upstream connection lost (tcp proxy)")
    return _frame(_HEADERS, _END_STREAM | _END_HEADERS, stream, block)


class _FrameReader:
    """Splits one direction's byte stream into HTTP/2 frames (after the client preface)."""

    def __init__(self, preface: bool) -> None:
        self._buf = bytearray()
        self._preface_left = len(_PREFACE) if preface else 0

    def feed(self, data: bytes) -> Iterator[_Frame]:
        self._buf += data
        if self._preface_left:
            take = min(self._preface_left, len(self._buf))
            self._preface_left -= take
            chunk = bytes(self._buf[:take])
            del self._buf[:take]
            yield _Frame(-1, 0, 0, chunk)  # passed through as is
        while len(self._buf) >= _FRAME_HEADER:
            length = int.from_bytes(self._buf[:3], "big")
            if len(self._buf) < _FRAME_HEADER + length:
                return
            raw = bytes(self._buf[: _FRAME_HEADER + length])
            del self._buf[: _FRAME_HEADER + length]
            stream = int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF
            yield _Frame(raw[3], raw[4], stream, raw)


@dataclass
class _Message:
    prefix: bytearray = field(default_factory=bytearray)
    body: bytearray = field(default_factory=bytearray)
    length: int | None = None


class _MessageSplitter:
    """Finds gRPC message boundaries in the DATA payloads of each stream."""

    def __init__(self) -> None:
        self._streams: dict[int, _Message] = {}

    def walk(self, stream: int, data: bytes) -> Iterator[tuple[str, int, bytes]]:
        """Yield ``("start", offset, b"")`` where a message begins in ``data`` and
        ``("end", offset, body)`` just after one ends."""

        m = self._streams.setdefault(stream, _Message())
        i = 0
        while i < len(data):
            if m.length is None:
                if not m.prefix:
                    yield "start", i, b""
                take = min(_MESSAGE_PREFIX - len(m.prefix), len(data) - i)
                m.prefix += data[i : i + take]
                i += take
                if len(m.prefix) == _MESSAGE_PREFIX:
                    m.length = int.from_bytes(m.prefix[1:], "big")
            else:
                take = min(m.length - len(m.body), len(data) - i)
                m.body += data[i : i + take]
                i += take
            if m.length is not None and len(m.body) == m.length:
                yield "end", i, bytes(m.body)
                m = self._streams[stream] = _Message()


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        sock.shutdown(socket.SHUT_RDWR)  # also wakes a thread blocked in recv
    except OSError:
        pass
    sock.close()


class _Connection:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.client_lock = threading.Lock()  # orders writes to the client socket
        self.server_lock = threading.Lock()  # and to the server socket
        self.held: list[bytes] = []
        self.requested: set[int] = set()  # streams the client opened
        self.answered: set[int] = set()  # streams whose response headers went to the client
        self.ended: set[int] = set()  # streams this proxy ended with UNAVAILABLE
        self.closed = False

    def send_to_client(self, data: bytes) -> None:
        if data:
            self.client.sendall(data)

    def send_to_server(self, data: bytes) -> None:
        with self.server_lock:
            self.server.sendall(data)

    def cut(self) -> None:
        """Drop the connection like a server that went away: the server side is reset, the
        client gets EOF after what was forwarded (the client->server pump then drains the
        client's end until the client closes it)."""

        if self.closed:
            return
        self.closed = True
        _reset(self.server)
        try:
            self.client.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.cut()
        _reset(self.client)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target`` and fails on command (see the module doc).

    Thread-safe: commands may come from any thread. Triggers apply to whichever connection
    reaches them first, so arm them while a single client is busy.

    Example:
        >>> with TcpProxy(server.address) as proxy:  # doctest: +SKIP
        ...     client = ReplayClient(proxy.address)
        ...     proxy.cut_after_responses(0)  # the next ack is lost after the batch was stored
        ...     assert client.append("t", batch).duplicate

    Args:
        target: ``host:port`` to forward to; may be changed later (new connections follow).
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._refuse_until: float | None = None
        self._cut_on_requests = 0
        self._cut_plan: deque[int] = deque()
        self._cut_left: int | None = None
        self._fail_plan: deque[int] = deque()
        self._fail_left: int | None = None
        self._hold_until: int | None = None
        self._messages_since_hold = 0
        self.connections = 0
        """Connections accepted and forwarded."""
        self.refused = 0
        """Connections refused by `refuse`."""
        self.cuts = 0
        """Connections dropped by a trigger or `cut_all`."""
        self.failed_streams = 0
        """Streams ended with UNAVAILABLE by `fail_streams_after_responses`."""
        self.request_streams = 0
        """Request streams (RPC attempts) the clients opened, cut ones included."""
        self.request_messages: list[bytes] = []
        """Serialized gRPC request messages forwarded client->server, in order."""
        self.responses = 0
        """gRPC response messages seen server->client (held and dropped ones included)."""
        acceptor = threading.Thread(target=self._accept, name="tcp-proxy-accept", daemon=True)
        acceptor.start()
        self._threads.append(acceptor)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- commands ---------------------------------------------------------------------------

    def cut_all(self) -> None:
        """Drop every open connection now."""

        with self._lock:
            conns = [c for c in self._conns if not c.closed]
            self.cuts += len(conns)
        for conn in conns:
            conn.cut()

    def cut_after_responses(self, *counts: int) -> None:
        """Forward ``counts[0]`` more response messages, then drop the connection; then
        ``counts[1]`` more (on the next connection), and so on."""

        with self._lock:
            self._cut_plan = deque(counts)
            self._cut_left = self._cut_plan.popleft() if self._cut_plan else None

    def fail_streams_after_responses(self, *counts: int) -> None:
        """Forward ``counts[0]`` more response messages, then end that stream with UNAVAILABLE;
        then ``counts[1]`` more, and so on. A 0 fails the next stream that answers at all."""

        with self._lock:
            self._fail_plan = deque(counts)
            self._fail_left = self._fail_plan.popleft() if self._fail_plan else None

    def cut_on_requests(self, n: int = 1) -> None:
        """Drop the connection of each of the next ``n`` request streams, before forwarding it."""

        with self._lock:
            self._cut_on_requests = n

    def refuse(self, seconds: float | None = None) -> None:
        """Refuse new connections for ``seconds`` (None: until `accept`); open ones stay."""

        with self._lock:
            self._refuse_until = float("inf") if seconds is None else time.monotonic() + seconds

    def accept(self) -> None:
        """Accept new connections again."""

        with self._lock:
            self._refuse_until = None

    def hold_responses(self, until_requests: int | None) -> None:
        """Hold server->client bytes back until ``until_requests`` more request messages were
        forwarded (None: until `release`)."""

        with self._lock:
            self._hold_until = 2**62 if until_requests is None else until_requests
            self._messages_since_hold = 0

    def release(self) -> None:
        """Send the held server->client bytes and stop holding."""

        with self._lock:
            self._hold_until = None
            conns = list(self._conns)
        for conn in conns:
            self._flush_held(conn)

    def close(self) -> None:
        """Stop listening and reset every connection. Idempotent."""

        with self._lock:
            self._closed = True
            conns = list(self._conns)
        for conn in conns:
            conn.close()
        for t in self._threads:
            t.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- threads ----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                refusing = self._refuse_until is not None and time.monotonic() < self._refuse_until
                if refusing:
                    self.refused += 1
            if refusing:
                _reset(client)
                continue
            host, port = self.target.rsplit(":", 1)
            try:
                server = socket.create_connection((host, int(port)), timeout=5)
            except OSError:  # the server is down: so is the connection
                _reset(client)
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(client, server)
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns = [c for c in self._conns if not c.closed] + [conn]
                self.connections += 1
            for target, name in ((self._client_to_server, "c2s"), (self._server_to_client, "s2c")):
                t = threading.Thread(target=target, args=(conn,), name=f"tcp-proxy-{name}", daemon=True)
                t.start()
                self._threads.append(t)

    def _client_to_server(self, conn: _Connection) -> None:
        reader = _FrameReader(preface=True)
        messages = _MessageSplitter()
        try:
            while data := conn.client.recv(65536):
                if conn.closed:
                    continue  # dropped: drain until the client closes its end
                for frame in reader.feed(data):
                    release = False
                    with self._lock:
                        if frame.type == _HEADERS and frame.stream not in conn.requested:
                            conn.requested.add(frame.stream)
                            self.request_streams += 1
                            if self._cut_on_requests:
                                self._cut_on_requests -= 1
                                self.cuts += 1
                                conn.cut()
                                break
                        if frame.type == _DATA:
                            for kind, _, body in messages.walk(frame.stream, frame.data):
                                if kind == "end":
                                    self.request_messages.append(body)
                                    self._messages_since_hold += 1
                            if self._hold_until is not None and self._messages_since_hold >= self._hold_until:
                                self._hold_until = None
                                release = True
                    conn.send_to_server(frame.raw)
                    if release:
                        with self._lock:
                            conns = list(self._conns)
                        for other in conns:
                            self._flush_held(other)
        except OSError:
            pass
        finally:
            conn.close()

    def _server_to_client(self, conn: _Connection) -> None:
        reader = _FrameReader(preface=False)
        messages = _MessageSplitter()
        try:
            while data := conn.server.recv(65536):
                for frame in reader.feed(data):
                    out, cut, fail = self._on_response_frame(conn, frame, messages)
                    if fail is not None:  # stop the server's side of the stream we ended
                        conn.send_to_server(_frame(_RST_STREAM, 0, fail, _CANCEL.to_bytes(4, "big")))
                    self._send_in_order(conn, out)
                    if cut:
                        conn.cut()
                        return
        except OSError:
            pass
        finally:
            conn.cut()

    def _on_response_frame(
        self, conn: _Connection, frame: _Frame, messages: _MessageSplitter
    ) -> tuple[bytes, bool, int | None]:
        """What to send the client for one server frame: ``(bytes, cut after, stream ended)``."""

        sid = frame.stream
        with self._lock:
            if sid in conn.ended:
                return b"", False, None  # the client was told this stream is over
            if frame.type == _HEADERS and sid and sid not in conn.answered:
                if self._fail_left == 0:
                    return self._end_stream(conn, sid, b""), False, sid
                conn.answered.add(sid)
            if frame.type != _DATA:
                return frame.raw, False, None
            for kind, offset, _ in messages.walk(sid, frame.data):
                if kind == "end":
                    self.responses += 1
                    self._cut_left = None if self._cut_left is None else self._cut_left - 1
                    self._fail_left = None if self._fail_left is None else self._fail_left - 1
                    continue
                before = _frame(_DATA, 0, sid, frame.data[:offset]) if offset else b""
                if self._cut_left == 0:  # forward the messages before this one, then drop
                    self._cut_left = self._cut_plan.popleft() if self._cut_plan else None
                    self.cuts += 1
                    return before, True, None
                if self._fail_left == 0:
                    return self._end_stream(conn, sid, before), False, sid
            return frame.raw, False, None

    def _end_stream(self, conn: _Connection, sid: int, before: bytes) -> bytes:
        # with self._lock held
        self._fail_left = self._fail_plan.popleft() if self._fail_plan else None
        self.failed_streams += 1
        conn.ended.add(sid)
        return before + _unavailable_trailers(sid, headers_sent=sid in conn.answered)

    def _send_in_order(self, conn: _Connection, data: bytes) -> None:
        with conn.client_lock:
            with self._lock:
                if self._hold_until is not None:
                    conn.held.append(data)
                    return
                held, conn.held = conn.held, []
            for chunk in held:
                conn.send_to_client(chunk)
            conn.send_to_client(data)

    def _flush_held(self, conn: _Connection) -> None:
        with conn.client_lock:
            with self._lock:
                held, conn.held = conn.held, []
            try:
                for chunk in held:
                    conn.send_to_client(chunk)
            except OSError:
                conn.cut()
