"""TLS contexts for phxq links, and how a connection says who it is.

Public API::

    server_context(ca, cert, key) -> ssl.SSLContext
    client_context(ca=None, cert=None, key=None) -> ssl.SSLContext
    reload_context(ctx, ca, cert=None, key=None)     # new cert/key (and CA) for new connections
    member_of(peer_cert) -> str | None               # "store-1" for a member certificate
    Credentials(ssl=None, token=None)                # what a client process presents
    Credentials.transport_factory(max_frame) -> TransportFactory  # TLS + hello per connection
    Credentials.for_client(token=None, ca=None) -> Credentials

Promises:

- A server context speaks TLS 1.2 or newer only, presents the member's certificate, and asks
  the peer for a certificate without requiring one (clients authenticate with a token); a
  certificate that is presented must chain to the cluster CA or the handshake fails.
- A client context checks the server's certificate against ``ca`` (the system trust store
  when ``ca`` is None) and its name against the host dialed; with ``cert``/``key`` it presents
  them (a member's outgoing connections).
- :func:`member_of` is a member id only for a certificate the handshake verified (the ssl
  module returns no fields otherwise) whose subject carries ``OU=phxq-member``.
- :class:`Credentials` never shows the token in a repr; its transport factory opens the TLS
  connection and, with a token, authenticates it with one ``hello`` request before the RPC
  layer uses it: a refused token raises ``Unauthenticated`` from there, typed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext  # in Credentials, the name ssl is its field
from typing import Any

from phxq.errors import PhxqError, ProtocolError, Unauthenticated
from phxq.net.frames import MAX_FRAME_DEFAULT, ErrorReply, Response, decode_body, encode_request
from phxq.net.server import HELLO
from phxq.net.transport import Transport, TransportFactory, connect_tcp, receive_one
from phxq.security.certs import MEMBER_OU

PathLike = str | os.PathLike[str]
HELLO_TIMEOUT = 5.0


def server_context(ca: PathLike, cert: PathLike, key: PathLike) -> ssl.SSLContext:
    """The context a daemon listens with (see the module docstring)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=os.fspath(ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca: PathLike | None = None, cert: PathLike | None = None, key: PathLike | None = None
) -> ssl.SSLContext:
    """The context a process dials phxq with (see the module docstring)."""
    if ca is None:
        ctx = ssl.create_default_context()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=os.fspath(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def reload_context(
    ctx: ssl.SSLContext, ca: PathLike, cert: PathLike | None = None, key: PathLike | None = None
) -> None:
    """Load a renewed certificate and key (and CA file) into ``ctx``: connections made from
    now on use them, open ones keep theirs. The ssl module can add trusted CAs to a context but
    not remove them: dropping a CA takes a restart. The files are tried on a scratch context
    first: a broken key must not leave ``ctx`` with a new certificate and the old key."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    scratch.load_verify_locations(cafile=os.fspath(ca))
    if cert is not None:
        scratch.load_cert_chain(cert, key)
        ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=os.fspath(ca))


def member_of(peer_cert: dict[str, Any] | None) -> str | None:
    """The member id (the subject's CN) of a verified member certificate, else None."""
    if not peer_cert:
        return None
    fields: dict[str, str] = {}
    for rdn in peer_cert.get("subject", ()):
        for name, value in rdn:
            fields[name] = value
    if fields.get("organizationalUnitName") != MEMBER_OU:
        return None
    return fields.get("commonName") or None


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client process presents: a TLS context (with a member certificate for members)
    and a bearer token (for everyone else). Both None: plaintext, anonymous (an open lab)."""

    ssl: ssl.SSLContext | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def for_client(
        cls, token: str | None = None, ca: PathLike | SSLContext | None = None
    ) -> Credentials:
        """``phxq.Client(token=, ca=)``: ``ca`` a CA file or a ready context; a token without
        ``ca`` goes over TLS checked against the system trust store (never in plaintext)."""
        if token is not None and (not isinstance(token, str) or not token):
            raise Unauthenticated("token must be a non-empty string")
        if isinstance(ca, ssl.SSLContext):
            context: ssl.SSLContext | None = ca
        elif ca is not None:
            context = client_context(Path(ca))
        elif token is not None:
            context = client_context()
        else:
            context = None
        return cls(context, token)

    @property
    def secure(self) -> bool:
        return self.ssl is not None

    def transport_factory(self, max_frame: int = MAX_FRAME_DEFAULT) -> TransportFactory:
        return functools.partial(_connect, ssl=self.ssl, token=self.token, max_frame=max_frame)


async def _connect(
    addr: str, *, ssl: ssl.SSLContext | None, token: str | None, max_frame: int
) -> Transport:
    transport = await connect_tcp(addr, max_frame=max_frame, ssl=ssl)
    if token is None:
        return transport
    try:
        await hello(transport, token)
    except BaseException:
        transport.close()
        raise
    return transport


async def hello(transport: Transport, token: str) -> Any:
    """Authenticate ``transport`` with ``token`` (request id 0, before any other request)."""
    transport.send(encode_request(0, HELLO, {"token": token}))
    try:
        async with asyncio.timeout(HELLO_TIMEOUT):
            body = await receive_one(transport)
    except TimeoutError:
        raise Unauthenticated(f"{transport.peer} did not answer the hello") from None
    frame = decode_body(body)
    if type(frame) is ErrorReply:
        error: PhxqError = frame.to_exception()
        raise error
    if type(frame) is not Response or frame.id != 0:
        raise ProtocolError(f"{transport.peer} answered the hello with {type(frame).__name__}")
    return frame.result
