"""The RPC wire format, without I/O: frame bodies in and out, typed frames, a streaming decoder.

A frame on a byte stream is ``[u32 big-endian length][msgpack body]``. The body is a msgpack
array (``use_bin_type=True``, decoded with ``raw=False``)::

    REQUEST   [0, id, method, params]
    RESPONSE  [1, id, result]
    ERROR     [2, id | nil, code, message, data]     # nil id: the connection as a whole failed
    NOTIFY    [3, method, params]                    # fire-and-forget, no reply

Public API:

- ``MAX_FRAME_DEFAULT`` (16 MiB), ``REQUEST``/``RESPONSE``/``ERROR``/``NOTIFY`` kind numbers.
- ``Request``, ``Response``, ``ErrorReply``, ``Notify``: frozen frame values; ``Frame`` is
  their union. ``ErrorReply.to_exception()`` rebuilds the ``PhxqError`` subclass.
- ``encode_request/encode_response/encode_error/encode_notify(...) -> bytes`` (a body, without
  the length prefix). They raise ``TypeError``/``ValueError`` when a value is not msgpack-able.
- ``encode_exception(id, exc) -> bytes``: an ERROR body for any ``PhxqError``, never too large
  (messages cut at ``MAX_ERROR_MESSAGE`` characters).
- ``decode_body(body) -> Frame``: validates kinds and field types; raises ``ProtocolError`` on
  anything malformed (never any other exception).
- ``request_id_of(body) -> int | None``: best-effort id of a malformed request, so the server
  can answer it with a typed error instead of dropping the connection.
- ``frame_kind(body) -> int | None``: a cheap peek at the kind without decoding.
- ``shown(value) -> str``: a short, cheap repr of a decoded value for error messages (from
  ``phxq.validate``).
- ``FrameDecoder(max_frame)``: ``feed(data) -> list[bytes]`` splits a byte stream into bodies;
  a length above ``max_frame`` raises ``ProtocolError`` as soon as the 4-byte header arrives,
  before any of the body is buffered. After that error the decoder is unusable.
- ``prefix(body) -> bytes``: the 4-byte length header of a body.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Any

import msgpack

from phxq.errors import PhxqError, ProtocolError, from_wire
from phxq.validate import shown as shown  # re-exported: part of this module's API

MAX_FRAME_DEFAULT = 16 << 20
HEADER_SIZE = 4
REQUEST, RESPONSE, ERROR, NOTIFY = 0, 1, 2, 3
MAX_REQUEST_ID = (1 << 64) - 1
MAX_ERROR_MESSAGE = 4096  # characters of an error message that go on the wire
MAX_ERROR_BODY = 64 << 10

_HEADER = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    method: str
    params: Any


@dataclass(frozen=True, slots=True)
class Response:
    id: int
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorReply:
    id: int | None
    code: str
    message: str
    data: dict[str, Any]

    def to_exception(self) -> PhxqError:
        return from_wire(self.code, self.message, self.data)


@dataclass(frozen=True, slots=True)
class Notify:
    method: str
    params: Any


Frame = Request | Response | ErrorReply | Notify


def prefix(body: bytes) -> bytes:
    return _HEADER.pack(len(body))


_packers = threading.local()


def _pack(obj: Any) -> bytes:
    # A Packer per thread, reused (packb builds one per call, which costs more than packing a
    # small frame); it is left empty after an error, so a failed pack leaves nothing behind.
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(obj)  # type: ignore[no-any-return]


def encode_request(request_id: int, method: str, params: Any) -> bytes:
    return _pack((REQUEST, request_id, method, params))


def encode_response(request_id: int, result: Any) -> bytes:
    return _pack((RESPONSE, request_id, result))


def encode_error(request_id: int | None, code: str, message: str, data: dict[str, Any]) -> bytes:
    return _pack((ERROR, request_id, code, message, data))


def encode_notify(method: str, params: Any) -> bytes:
    return _pack((NOTIFY, method, params))


def encode_exception(request_id: int | None, exc: PhxqError) -> bytes:
    """An ERROR body for ``exc``. A message longer than ``MAX_ERROR_MESSAGE`` characters is cut
    (it may quote a huge bad value: the reply must still fit in a frame); ``data`` is dropped
    if it is not msgpack-able or makes the body larger than ``MAX_ERROR_BODY``."""
    code, message, data = exc.to_wire()
    if len(message) > MAX_ERROR_MESSAGE:
        message = f"{message[:MAX_ERROR_MESSAGE]}... ({len(message)} characters)"
    try:
        body = encode_error(request_id, code, message, data)
    except (TypeError, ValueError, OverflowError):
        return encode_error(request_id, code, message, {})
    if len(body) > MAX_ERROR_BODY:
        return encode_error(request_id, code, message, {})
    return body


def frame_kind(body: bytes) -> int | None:
    """The kind of a well-formed body (a fixarray of 3-5 elements starting with a fixint)."""
    if len(body) >= 2 and 0x93 <= body[0] <= 0x95 and body[1] <= NOTIFY:
        return body[1]
    return None


def _unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, TypeError...)
        raise ProtocolError(f"malformed msgpack body: {type(exc).__name__}: {exc}") from None


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_REQUEST_ID


def decode_body(body: bytes) -> Frame:
    """Decode and validate one frame body. Raises ``ProtocolError`` on anything malformed."""
    obj = _unpack(body)
    if not isinstance(obj, list) or not obj:
        raise ProtocolError("frame body must be a non-empty array")
    kind = obj[0]
    n = len(obj)
    if kind == REQUEST and type(kind) is int:
        if n != 4 or not _is_id(obj[1]) or not isinstance(obj[2], str):
            raise ProtocolError("REQUEST must be [0, id:uint, method:str, params]")
        return Request(obj[1], obj[2], obj[3])
    if kind == RESPONSE and type(kind) is int:
        if n != 3 or not _is_id(obj[1]):
            raise ProtocolError("RESPONSE must be [1, id:uint, result]")
        return Response(obj[1], obj[2])
    if kind == ERROR and type(kind) is int:
        if n != 5 or not (obj[1] is None or _is_id(obj[1])):
            raise ProtocolError("ERROR must be [2, id:uint|nil, code, message, data]")
        code, message, data = obj[2], obj[3], obj[4]
        if not isinstance(code, str) or not isinstance(message, str):
            raise ProtocolError("ERROR code and message must be strings")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ProtocolError("ERROR data must be a map")
        return ErrorReply(obj[1], code, message, data)
    if kind == NOTIFY and type(kind) is int:
        if n != 3 or not isinstance(obj[1], str):
            raise ProtocolError("NOTIFY must be [3, method:str, params]")
        return Notify(obj[1], obj[2])
    raise ProtocolError(f"unknown frame kind {shown(kind)}")  # not repr: it may be 1000 deep


def request_id_of(body: bytes) -> int | None:
    """The id of a body that looks like a request (even a malformed one), else ``None``."""
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        return None
    if isinstance(obj, list) and len(obj) >= 2 and obj[0] == REQUEST and _is_id(obj[1]):
        return int(obj[1])
    return None


class FrameDecoder:
    """Splits a byte stream into frame bodies, enforcing ``max_frame`` before buffering a body."""

    __slots__ = ("_buf", "_failed", "_need", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME_DEFAULT) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need = -1  # body length of the frame in progress, -1 while reading a header
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a complete body."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._failed:
            raise ProtocolError("frame decoder already failed")
        buf = self._buf
        buf += data
        bodies: list[bytes] = []
        pos = 0
        end = len(buf)
        need = self._need
        while True:
            if need < 0:
                if end - pos < HEADER_SIZE:
                    break
                need = _HEADER.unpack_from(buf, pos)[0]
                pos += HEADER_SIZE
                if need > self.max_frame:
                    self._failed = True
                    del buf[:]
                    raise ProtocolError(
                        f"frame of {need} bytes exceeds the maximum of {self.max_frame}",
                        {"size": need, "max": self.max_frame},
                    )
            if end - pos < need:
                break
            bodies.append(bytes(buf[pos : pos + need]))
            pos += need
            need = -1
        self._need = need
        if pos:
            del buf[:pos]
        return bodies
