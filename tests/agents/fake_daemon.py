"""An in-process fake of the daemon's agent API, behind an ``httpx.MockTransport``.

It keeps the daemon's rules that the agent relies on: a job is listed in ``start`` until its
``started`` event is accepted; the same ``ended`` twice is accepted, a different outcome is
refused; a log upload at the wrong offset gets 409 with the real size; a node it does not
know gets 404; a node another machine owns (``owners``) answers registrations, heartbeats
and assignments polls 409. Tokens as the daemon takes them: a register with ``join_token``
brings the node and takes the credential it sends (``credentials``), ``lose_join_answer``
times dropping the answer after taking it; every other call must carry the node's
credential, or gets 401. ``down = True`` makes every request fail as a refused connection. As a daemon
that checks reports at the door would, ``refuse_event`` (event -> reason, or None) answers a
whole events request 422 when one event in it is refused; ``fail_events`` answers that many
events requests 500 first; ``refuse_logs`` answers those jobs' log uploads 413. Every call
is recorded, so tests can assert on order and counts.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from poold_common.tokens import make_token
from poold_wire.messages import (
    Assignment,
    AssignmentsResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JobEvent,
    JobEventResult,
    JobEventsRequest,
    JobEventsResponse,
    RegisterRequest,
    RegisterResponse,
)


@dataclass
class FakeJob:
    assignment: Assignment
    node: str
    started: bool = False
    outcome: tuple[str | None, int | None] | None = None
    cancel: bool = False


@dataclass
class Call:
    method: str
    path: str
    at: float
    refused: bool  # the daemon was down


@dataclass
class FakeDaemon:
    heartbeat_interval_s: float = 0.2
    down: bool = False
    go_down_after_listing: bool = False  # go down right after answering an assignments call that starts a job
    refuse_event: Callable[[JobEvent], str | None] | None = None
    fail_events: int = 0
    refuse_logs: set[int] = field(default_factory=set)  # job ids whose log uploads get 413
    calls: list[Call] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    jobs: dict[int, FakeJob] = field(default_factory=dict)
    events: list[JobEvent] = field(default_factory=list)  # accepted, in arrival order
    refused_events: list[JobEventResult] = field(default_factory=list)
    heartbeats: list[HeartbeatRequest] = field(default_factory=list)
    registrations: list[RegisterRequest] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # node -> machine id: others get 409
    join_token: str = field(default_factory=make_token)
    credentials: dict[str, str] = field(default_factory=dict)  # node -> the credential taken at its join
    lose_join_answer: int = 0  # joins taken whose answer is then lost (a timeout)
    logs: dict[int, bytearray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # ---- what a test does -------------------------------------------------------------

    def assign(self, assignment: Assignment, node: str = "node-1") -> None:
        with self.lock:
            self.jobs[assignment.job_id] = FakeJob(assignment, node)

    def cancel(self, job_id: int) -> None:
        with self.lock:
            self.jobs[job_id].cancel = True

    def forget(self, node: str) -> None:
        with self.lock:
            self.nodes.discard(node)

    def count(self, method: str, path_suffix: str, refused: bool | None = None) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c.method == method and c.path.endswith(path_suffix)
                       and (refused is None or c.refused == refused))

    def event_kinds(self, job_id: int) -> list[tuple[str, str | None, int | None]]:
        with self.lock:
            return [(e.kind, e.outcome, e.exit_code) for e in self.events if e.job_id == job_id]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError(f"fake daemon: timed out waiting for {what}; calls: {[(c.method, c.path) for c in self.calls][-20:]}")

    # ---- the API ----------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            path = request.url.path
            self.calls.append(Call(request.method, path, time.monotonic(), self.down))
            if self.down:
                raise httpx.ConnectError("connection refused", request=request)
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if request.method == "POST" and path == "/api/v1/agents/register":
                return self._register(RegisterRequest.model_validate_json(request.content), token, request)
            if match := re.fullmatch(r"/api/v1/agents/([^/]+)/(heartbeat|assignments|events)", path):
                node, what = match.groups()
                if self.credentials.get(node) != token:
                    return httpx.Response(401, json={"detail": "not a valid token"})
                if node not in self.nodes:
                    return httpx.Response(404, json={"detail": f"no node {node}"})
                if what == "heartbeat":
                    body = HeartbeatRequest.model_validate_json(request.content)
                    if (refused := self._claimed(node, body.machine_id)) is not None:
                        return refused
                    self.heartbeats.append(body)
                    return httpx.Response(200, json=HeartbeatResponse().model_dump())
                if what == "assignments":
                    if (refused := self._claimed(node, request.url.params.get("machine_id"))) is not None:
                        return refused
                    return self._assignments(node)
                return self._events(node, JobEventsRequest.model_validate_json(request.content))
            if (match := re.fullmatch(r"/api/v1/jobs/(\d+)/log", path)) and request.method == "PUT":
                if self.credentials.get(request.url.params["node"]) != token:
                    return httpx.Response(401, json={"detail": "not a valid token"})
                return self._log(int(match.group(1)), int(request.url.params["offset"]), request.content)
            return httpx.Response(404, json={"detail": f"no route {request.method} {path}"})

    def _claimed(self, node: str, machine_id: str | None) -> httpx.Response | None:
        owner = self.owners.get(node)
        if owner is not None and machine_id != owner:
            return httpx.Response(409, json={"detail": f"node {node} belongs to machine {owner}; this is machine {machine_id}"})
        return None

    def _register(self, body: RegisterRequest, token: str, request: httpx.Request) -> httpx.Response:
        self.registrations.append(body)
        held = self.credentials.get(body.node)
        if token == self.join_token and body.credential is not None and held in (None, body.credential):
            self.credentials[body.node] = body.credential
            if self.lose_join_answer > 0:
                self.lose_join_answer -= 1
                raise httpx.ReadTimeout("the answer was lost", request=request)
        elif held is None or token != held:
            return httpx.Response(401 if token != self.join_token else 403, json={"detail": f"not node {body.node}'s token"})
        if (refused := self._claimed(body.node, body.machine_id)) is not None:
            return refused
        self.nodes.add(body.node)
        return httpx.Response(200, json=RegisterResponse(node=body.node, heartbeat_interval_s=self.heartbeat_interval_s).model_dump())

    def _assignments(self, node: str) -> httpx.Response:
        mine = [job for job in self.jobs.values() if job.node == node and job.outcome is None]
        answer = AssignmentsResponse(start=[job.assignment for job in mine if not job.started and not job.cancel],
                                     cancel=[job.assignment.job_id for job in mine if job.cancel])
        if answer.start and self.go_down_after_listing:
            self.down, self.go_down_after_listing = True, False
        return httpx.Response(200, json=answer.model_dump(mode="json"))

    def _events(self, node: str, body: JobEventsRequest) -> httpx.Response:
        if self.fail_events > 0:
            self.fail_events -= 1
            return httpx.Response(500, text="Internal Server Error")
        for index, event in enumerate(body.events):
            reason = self.refuse_event(event) if self.refuse_event else None
            if reason is not None:
                return httpx.Response(422, json={"detail": f"invalid request: events.{index}: {reason}"})
        results = []
        for event in body.events:
            job = self.jobs.get(event.job_id)
            accepted, reason = True, None
            if job is None or job.node != node:
                accepted, reason = False, f"job {event.job_id} is not placed on node {node}"
            elif event.kind == "started":
                job.started = True
            elif job.outcome is not None and job.outcome != (event.outcome, event.exit_code):
                accepted, reason = False, f"job {event.job_id} already ended as {job.outcome[0]}"
            else:
                job.outcome = (event.outcome, event.exit_code)
            result = JobEventResult(job_id=event.job_id, kind=event.kind, accepted=accepted, reason=reason)
            results.append(result)
            if accepted:
                self.events.append(event)
            else:
                self.refused_events.append(result)
        return httpx.Response(200, json=JobEventsResponse(results=results).model_dump())

    def _log(self, job_id: int, offset: int, data: bytes) -> httpx.Response:
        if job_id in self.refuse_logs:
            return httpx.Response(413, json={"detail": f"job {job_id}: the log is over its size limit"})
        log = self.logs.setdefault(job_id, bytearray())
        if offset != len(log):
            return httpx.Response(409, json={"size": len(log)})
        log.extend(data)
        return httpx.Response(200, content=json.dumps({"size": len(log)}).encode(),
                              headers={"content-type": "application/json"})
