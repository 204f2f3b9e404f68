"""The agent's side of the daemon's HTTP API, and the backoff it uses while the daemon is away.

Every call carries the node's credential (``agents.credential``); a join carries the join
token instead. Errors are sorted by what the agent does about them: ``DaemonUnavailable``
(connection errors, timeouts, 5xx) means wait and retry; ``NotAuthenticated`` (401: the
credential or join token is not, or no longer, taken) means say so, keep every report and
retry later; ``UnknownNode`` (404 on a node's endpoint) means register again;
``DaemonRejected`` (other 4xx) means the daemon refused this request for good and says why
in ``detail``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from poold_common.https import client_context
from poold_wire.messages import (
    AssignmentsResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JobEvent,
    JobEventsRequest,
    JobEventsResponse,
    RegisterRequest,
    RegisterResponse,
)

ResponseT = TypeVar("ResponseT", bound=BaseModel)


class DaemonUnavailable(Exception):
    """The daemon did not answer, or answered 5xx: retry later."""


class DaemonRejected(Exception):
    """A 4xx answer; ``detail`` is the daemon's reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class NotAuthenticated(Exception):
    """401: the daemon does not take the token sent (none yet, revoked, a join token expired or
    used up). Nothing is wrong with the report itself: keep it, retry later."""


class UnknownNode(DaemonRejected):
    """404 for this node: the daemon forgot it (or never knew it); register again."""


class LogOffsetMismatch(DaemonRejected):
    """409 on a log upload; ``size`` is how many bytes the daemon has."""

    def __init__(self, size: int) -> None:
        super().__init__(409, f"the daemon has {size} bytes")
        self.size = size


class DaemonClient:
    """One node's calls to the daemon, as ``token`` (set with :meth:`use`); HTTPS answers are
    verified against ``ca_file`` (default: the system's CAs). ``transport`` lets tests put a
    fake daemon behind it."""

    def __init__(
        self, base_url: str, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport, verify=client_context(ca_file))

    def close(self) -> None:
        self.http.close()

    def use(self, token: str) -> None:
        """Send ``token`` (the node's credential) with every call from now on."""
        self.http.headers["Authorization"] = f"Bearer {token}"

    def register(self, request: RegisterRequest, join_token: str | None = None) -> RegisterResponse:
        """Register the node: with its credential, or (a join) with ``join_token``."""
        headers = {"Authorization": f"Bearer {join_token}"} if join_token else {}
        return self._call("POST", "/api/v1/agents/register", RegisterResponse, json=request.model_dump(mode="json"), headers=headers)

    def heartbeat(self, node: str, request: HeartbeatRequest) -> HeartbeatResponse:
        return self._call("POST", f"/api/v1/agents/{node}/heartbeat", HeartbeatResponse,
                          json=request.model_dump(mode="json"), node=True)

    def assignments(self, node: str, machine_id: str | None = None) -> AssignmentsResponse:
        params = {"machine_id": machine_id} if machine_id else {}
        return self._call("GET", f"/api/v1/agents/{node}/assignments", AssignmentsResponse, node=True, params=params)

    def send_events(self, node: str, events: list[JobEvent]) -> JobEventsResponse:
        body = JobEventsRequest(events=events).model_dump(mode="json")
        return self._call("POST", f"/api/v1/agents/{node}/events", JobEventsResponse, json=body, node=True)

    def put_log(self, node: str, job_id: int, offset: int, data: bytes) -> int:
        """Append ``data`` at ``offset`` of the log of ``node``'s job; the daemon's new total size in bytes."""
        response = self._send("PUT", f"/api/v1/jobs/{job_id}/log", params={"offset": offset, "node": node}, content=data,
                              headers={"content-type": "application/octet-stream"})
        if response.status_code == 409:
            raise LogOffsetMismatch(int(_json(response).get("size", 0)))
        _raise_for_status(response, node=False)
        return int(_json(response)["size"])

    def _call(self, method: str, url: str, model: type[ResponseT], node: bool = False, **kwargs: Any) -> ResponseT:
        response = self._send(method, url, **kwargs)
        _raise_for_status(response, node)
        try:
            return model.model_validate(response.json())
        except ValueError as exc:
            raise DaemonUnavailable(f"{method} {url}: unreadable answer: {exc}") from exc

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise DaemonUnavailable(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _raise_for_status(response: httpx.Response, node: bool) -> None:
    status = response.status_code
    if status < 400:
        return
    where = f"{response.request.method} {response.request.url.path}"
    if status >= 500:
        raise DaemonUnavailable(f"{where}: {status}")
    detail = str(_json(response).get("detail") or response.text[:200])
    if status == 401:
        raise NotAuthenticated(f"{where}: {detail}")
    if status == 404 and node:
        raise UnknownNode(status, detail)
    raise DaemonRejected(status, f"{where}: {detail}")


class Backoff:
    """Exponential backoff with jitter: the n-th delay lies in [d/2, d], d = min(cap, base * 2**n)."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures, 32))
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
