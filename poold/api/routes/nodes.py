"""Routes for nodes and devices: list, drain, undrain."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from poold.api import convert
from poold.api.context import AppContext
from poold.api.errors import responses
from poold.api.routes import NodeNamePath, ctx_of
from poold.api.schemas import DeviceOut, DrainRequest, NodeOut
from poold.db.session import transaction
from poold.services import nodes
from poold_wire.messages import NODE_NAME_PATTERN

router = APIRouter(tags=["nodes"])


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(ctx: AppContext = Depends(ctx_of)) -> list[NodeOut]:
    with transaction(ctx.factory) as session:
        return [convert.node_out(node, total, free) for node, total, free in nodes.list_nodes(session)]


@router.get("/devices", response_model=list[DeviceOut], responses=responses(404, 422))
def list_devices(
    node: str | None = Query(default=None, max_length=200, pattern=NODE_NAME_PATTERN, description="only this node's devices"),
    ctx: AppContext = Depends(ctx_of),
) -> list[DeviceOut]:
    with transaction(ctx.factory) as session:
        if node is not None:
            nodes.get_node(session, node)
        devices = nodes.list_devices(session, node)
        names = convert.node_names(session)
        held = nodes.allocated_shares(session)
        uuids = {device.id: device.uuid for device in devices}
        return [convert.device_out(device, names, held, ctx.settings, uuids) for device in devices]


@router.post("/nodes/{node}/drain", response_model=NodeOut, responses=responses(400, 404, 422))
def drain(node: NodeNamePath, body: DrainRequest | None = None, ctx: AppContext = Depends(ctx_of)) -> NodeOut:
    return _set_drained(ctx, node, True, body.reason if body else None)


@router.post("/nodes/{node}/undrain", response_model=NodeOut, responses=responses(404, 422))
def undrain(node: NodeNamePath, ctx: AppContext = Depends(ctx_of)) -> NodeOut:
    return _set_drained(ctx, node, False, None)


def _set_drained(ctx: AppContext, name: str, drained: bool, reason: str | None) -> NodeOut:
    with transaction(ctx.factory) as session:
        nodes.set_drained(session, name, drained, reason)
        row = next(item for item in nodes.list_nodes(session) if item[0].name == name)
        out = convert.node_out(*row)
    ctx.wake_scheduler()
    return out
