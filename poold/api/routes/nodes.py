"""Routes for nodes and devices: list, drain, undrain, return a quarantined device."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.orm import Session

from poold.api import convert
from poold.api.auth import Admin, Person
from poold.api.context import AppContext
from poold.api.errors import responses
from poold.api.retry import RetryingRoute
from poold.api.routes import NodeNamePath, ctx_of
from poold.api.schemas import DeviceOut, DrainRequest, NodeOut
from poold.db.models import DeviceModel
from poold.db.session import reading, transaction
from poold.services import nodes
from poold_wire.messages import NODE_NAME_PATTERN

router = APIRouter(tags=["nodes"], route_class=RetryingRoute)


@router.get("/nodes", response_model=list[NodeOut], responses=responses())
def list_nodes(_who: Person, ctx: AppContext = Depends(ctx_of)) -> list[NodeOut]:
    with reading(ctx.factory) as session:
        return [convert.node_out(node, counts) for node, counts in nodes.list_nodes(session)]


@router.get("/devices", response_model=list[DeviceOut], responses=responses(404, 422))
def list_devices(
    _who: Person,
    node: str | None = Query(default=None, max_length=200, pattern=NODE_NAME_PATTERN, description="only this node's devices"),
    ctx: AppContext = Depends(ctx_of),
) -> list[DeviceOut]:
    with reading(ctx.factory) as session:
        if node is not None:
            nodes.get_node(session, node)
        return _devices_out(session, ctx, nodes.list_devices(session, node))


@router.post("/devices/{uuid}/return", response_model=DeviceOut, responses=responses(404, 409, 422))
def return_device(
    _who: Admin,
    uuid: str = Path(min_length=1, max_length=200, description="the device's uuid"),
    node: str | None = Query(default=None, max_length=200, pattern=NODE_NAME_PATTERN, description="the device's node, when its uuid is on several"),
    ctx: AppContext = Depends(ctx_of),
) -> DeviceOut:
    """Return a quarantined device to service (admins): one that flapped, or at once."""
    with transaction(ctx.factory) as session:
        device = nodes.return_device(session, uuid, node)
        [out] = _devices_out(session, ctx, [device])
    ctx.wake_scheduler()
    return out


def _devices_out(session: Session, ctx: AppContext, devices: list[DeviceModel]) -> list[DeviceOut]:
    names = convert.node_names(session, (device.node_id for device in devices))
    held = nodes.allocated_shares(session)
    uuids = {device.id: device.uuid for device in devices}
    uuids.update({device.parent.id: device.parent.uuid for device in devices if device.parent_id not in uuids and device.parent})
    return [
        convert.device_out(device, names, held, ctx.settings, uuids, ctx.reports.usage(names.get(device.node_id, "")))
        for device in devices
    ]


@router.post("/nodes/{node}/drain", response_model=NodeOut, responses=responses(400, 404, 422))
def drain(node: NodeNamePath, _who: Admin, body: DrainRequest | None = None, ctx: AppContext = Depends(ctx_of)) -> NodeOut:
    return _set_drained(ctx, node, True, body.reason if body else None)


@router.post("/nodes/{node}/undrain", response_model=NodeOut, responses=responses(404, 422))
def undrain(node: NodeNamePath, _who: Admin, ctx: AppContext = Depends(ctx_of)) -> NodeOut:
    return _set_drained(ctx, node, False, None)


def _set_drained(ctx: AppContext, name: str, drained: bool, reason: str | None) -> NodeOut:
    with transaction(ctx.factory) as session:
        nodes.set_drained(session, name, drained, reason)
        row = next(item for item in nodes.list_nodes(session) if item[0].name == name)
        out = convert.node_out(*row)
    ctx.wake_scheduler()
    return out
