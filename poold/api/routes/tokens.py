"""Routes for tokens (admins): list, make, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from poold.api import convert
from poold.api.auth import Admin
from poold.api.context import AppContext
from poold.api.errors import responses
from poold.api.retry import RetryingRoute
from poold.api.routes import ctx_of
from poold.api.schemas import TokenCreate, TokenIssued, TokenOut
from poold.db.session import reading, transaction
from poold.services import tokens
from poold_wire.messages import NODE_NAME_PATTERN

router = APIRouter(prefix="/tokens", tags=["tokens"], route_class=RetryingRoute)


@router.get("", response_model=list[TokenOut], responses=responses(422))
def list_tokens(
    _who: Admin,
    node: str | None = Query(default=None, max_length=200, pattern=NODE_NAME_PATTERN, description="only this node's credentials"),
    include_ended: bool = Query(default=False, description="also revoked, expired and used-up tokens"),
    ctx: AppContext = Depends(ctx_of),
) -> list[TokenOut]:
    with reading(ctx.factory) as session:
        return [convert.token_out(row) for row in tokens.list_tokens(session, node, include_ended)]


@router.post("", response_model=TokenIssued, status_code=201, responses=responses(400, 422))
def create(body: TokenCreate, who: Admin, ctx: AppContext = Depends(ctx_of)) -> TokenIssued:
    """Make an admin, user or join token; the answer holds the token itself, shown this once."""
    with transaction(ctx.factory) as session:
        issued = tokens.create(session, body.role, user=body.user, expires_in_s=body.expires_in_s, uses=body.uses, note=body.note,
                               created_by=str(who))
        return TokenIssued(**convert.token_out(issued.row).model_dump(), token=issued.token)


@router.post("/{token_id}/revoke", response_model=TokenOut, responses=responses(404, 409, 422))
def revoke(
    who: Admin,
    token_id: str = Path(min_length=12, max_length=12, pattern=r"^[0-9a-f]{12}$", description="the token's id (pld_<id>_...)"),
    ctx: AppContext = Depends(ctx_of),
) -> TokenOut:
    """Revoke a token: at once on this daemon; on others sharing its store within their
    ``auth.cache_s``. Revoking a node's credential frees its name for another join."""
    with transaction(ctx.factory) as session:
        out = convert.token_out(tokens.revoke(session, token_id))
    ctx.auth.forget(token_id)
    return out
