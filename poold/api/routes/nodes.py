"""Routes for nodes and devices: list, drain, undrain, return a quarantined device."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from poold.api import convert
from poold.api.context import AppContext
from poold.api.retry import RetryingRoute
from poold.api.routes import ctx_of
from poold.api.schemas import DeviceOut, DrainRequest, NodeOut
from poold.db.models import DeviceModel
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
        return _devices_out(session, ctx, nodes.list_devices(session, node))


@router.post("/devices/{uuid}/return", response_model=DeviceOut)
def return_device(
    uuid: str, node: str | None = Query(default=None, description="the device's node, when its uuid is on several"),
    ctx: AppContext = Depends(ctx_of),
) -> DeviceOut:
    """Return a quarantined device to service (operators): one that flapped, or at once."""
    with transaction(ctx.factory) as session:
        device = nodes.return_device(session, uuid, node)
        [out] = _devices_out(session, ctx, [device])
    ctx.wake_scheduler()
    return out


def _devices_out(session: Session, ctx: AppContext, devices: list[DeviceModel]) -> list[DeviceOut]:
    names = convert.node_names(session)
    held = nodes.allocated_shares(session)
    uuids = {device.id: device.uuid for device in devices}
    uuids.update({device.parent.id: device.parent.uuid for device in devices if device.parent_id not in uuids and device.parent})
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
