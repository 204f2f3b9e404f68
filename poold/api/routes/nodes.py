"""Routes for nodes and devices: list, drain, undrain."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from poold.api import convert
from poold.api.context import AppContext
from poold.api.retry import RetryingRoute
from poold.api.routes import ctx_of
from poold.api.schemas import DeviceOut, DrainRequest, NodeOut
from poold.db.session import reading, transaction
from poold.services import nodes

router = APIRouter(tags=["nodes"], route_class=RetryingRoute)


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(ctx: AppContext = Depends(ctx_of)) -> list[NodeOut]:
    with reading(ctx.factory) as session:
        return [convert.node_out(node, total, free) for node, total, free in nodes.list_nodes(session)]


@router.get("/devices", response_model=list[DeviceOut])
def list_devices(node: str | None = None, ctx: AppContext = Depends(ctx_of)) -> list[DeviceOut]:
    with reading(ctx.factory) as session:
        if node is not None:
            nodes.get_node(session, node)
        devices = nodes.list_devices(session, node)
        names = convert.node_names(session)
        held = nodes.allocated_shares(session)
        uuids = {device.id: device.uuid for device in devices}
        return [
            convert.device_out(device, names, held, ctx.settings, uuids, ctx.reports.usage(names.get(device.node_id, "")))
            for device in devices
        ]


@router.post("/nodes/{node}/drain", response_model=NodeOut)
def drain(node: str, body: DrainRequest | None = None, ctx: AppContext = Depends(ctx_of)) -> NodeOut:
    return _set_drained(ctx, node, True, body.reason if body else None)


@router.post("/nodes/{node}/undrain", response_model=NodeOut)
def undrain(node: str, ctx: AppContext = Depends(ctx_of)) -> NodeOut:
    return _set_drained(ctx, node, False, None)


def _set_drained(ctx: AppContext, name: str, drained: bool, reason: str | None) -> NodeOut:
    with transaction(ctx.factory) as session:
        nodes.set_drained(session, name, drained, reason)
        row = next(item for item in nodes.list_nodes(session) if item[0].name == name)
        out = convert.node_out(*row)
    ctx.wake_scheduler()
    return out
