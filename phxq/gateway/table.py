"""The route table's types: what one HTTP operation takes, answers and needs.

A :class:`Route` is data: its method and path, its parameters and body with their schemas, its
answer's schema, the permission it needs, and the handler that runs it. The router
(:mod:`phxq.gateway.server`) dispatches and validates from these objects, and the OpenAPI
document (:mod:`phxq.gateway.openapi`) is generated from the very same objects, so the two
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from phxq.security.principals import Permission

if TYPE_CHECKING:
    from phxq.gateway.handlers import Call

Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Param:
    """A path, query or header parameter. ``schema`` types and bounds its parsed value."""

    name: str
    where: Literal["path", "query", "header"]
    schema: dict[str, Any]
    description: str
    required: bool = False
    example: Any = None

    @property
    def key(self) -> str:
        """The name handlers see it under (``Phxq-Dedup-Id`` -> ``dedup_id``)."""
        if self.where == "header":
            return self.name.removeprefix("Phxq-").lower().replace("-", "_")
        return self.name


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of the ``/v1`` API.

    ``json_body``: the schema of a JSON request body (``None``: no JSON body). ``raw_body``:
    a body that is not ``application/json`` is passed to the handler as bytes. ``permission``:
    the grant a principal needs, as the ``[[principal]]`` allow lists write it
    (``"produce:{topic}"``, ``"consume:{topic}:{group}"``, ``"admin"``; the names come from
    the parameters and body fields, and a consume without a group needs a grant for any
    group, as the RPC's tail); ``""`` means any authenticated caller, ``None`` no
    authentication at all; with ``permissions`` (a function of the parsed parameters and
    body giving every grant needed), ``permission`` only documents them."""

    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    response: dict[str, Any]
    params: tuple[Param, ...] = ()
    json_body: dict[str, Any] | None = None
    raw_body: bool = False
    permission: str | None = ""
    media_type: str = "application/json"
    description: str = ""
    tags: tuple[str, ...] = ()
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404, 429, 503))
    body_example: Any = None
    permissions: Callable[[dict[str, Any]], tuple[Permission, ...]] | None = None

    def needs_all(self, values: dict[str, Any]) -> tuple[Permission, ...]:
        """Every permission this request needs: ``permissions(values)`` when the route has
        that function (a transaction needs ``produce`` on each of its topics), else
        :meth:`needs`."""
        if self.permissions is not None:
            return self.permissions(values)
        need = self.needs(values)
        return () if need is None else (need,)

    def needs(self, values: dict[str, Any]) -> Permission | None:
        """The permission this request needs, given its parsed parameters and body fields;
        None when any authenticated caller may do it."""
        verb = (self.permission or "").split(":")[0]
        if verb == "produce":
            return Permission.produce(values["topic"])
        if verb == "consume":
            return Permission.consume(values["topic"], values.get("group"))
        if verb == "admin":
            return Permission.admin()
        if verb:
            raise ValueError(f"route {self.operation_id}: unknown permission {self.permission!r}")
        return None
