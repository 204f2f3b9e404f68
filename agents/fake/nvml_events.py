"""NVML events in the fake: event sets, XID faults from the fixture, XIDs injected at run time.

Events come from two places: the fixture's ``[faults] xid`` entries (delivered to an event
set once it has waited ``after_waits`` times) and ``<uuid> <xid>`` lines appended to
``$POOLD_FAKE_STATE/xid`` after the fake NVML was created, which the next wait of any event
set consumes, once (delivered to every event set registered on that GPU).
"""

from __future__ import annotations

import os
import time
from collections import deque

import pynvml

from agents.fake.nvml_call import nvml_function
from agents.fake.nvml_model import FakeGpu, FakeMigSlice

NO_INSTANCE = 0xFFFFFFFF
SUPPORTED_EVENTS = (
    pynvml.nvmlEventTypeSingleBitEccError
    | pynvml.nvmlEventTypeDoubleBitEccError
    | pynvml.nvmlEventTypePState
    | pynvml.nvmlEventTypeXidCriticalError
    | pynvml.nvmlEventTypeClock
)
_POLL_S = 0.01


class FakeEventData:
    """What ``nvmlEventSetWait`` returns: the fields of ``c_nvmlEventData_t``."""

    __slots__ = ("device", "eventType", "eventData", "gpuInstanceId", "computeInstanceId")

    def __init__(self, device: FakeGpu, event_type: int, data: int, gi: int = NO_INSTANCE, ci: int = NO_INSTANCE):
        self.device, self.eventType, self.eventData = device, event_type, data
        self.gpuInstanceId, self.computeInstanceId = gi, ci


class FakeEventSet:
    def __init__(self) -> None:
        self.registered: dict[str, int] = {}  # GPU uuid -> event mask
        self.queue: deque[FakeEventData] = deque()
        self.waits = 0
        self.scheduled_done: set[int] = set()
        self.freed = False


class EventsMixin:
    """The event functions of :class:`agents.fake.nvml.FakeNvml`, which provides ``_lock``,
    ``_event_sets``, ``_gpus``, ``_by_uuid``, ``_scheduled``, ``_xid_offset`` and ``state``."""

    @nvml_function()
    def nvmlDeviceGetSupportedEventTypes(self, handle: FakeGpu) -> int:
        return SUPPORTED_EVENTS

    @nvml_function(core=True)
    def nvmlEventSetCreate(self) -> FakeEventSet:
        event_set = FakeEventSet()
        self._event_sets.add(event_set)
        return event_set

    @nvml_function()
    def nvmlDeviceRegisterEvents(self, handle: FakeGpu, event_types: int, event_set: FakeEventSet) -> None:
        if not isinstance(event_set, FakeEventSet) or event_set.freed:
            raise pynvml.NVMLError_InvalidArgument()
        if event_types & ~SUPPORTED_EVENTS:
            raise pynvml.NVMLError_NotSupported()
        with self._lock:
            event_set.registered[handle.uuid] = event_set.registered.get(handle.uuid, 0) | event_types

    @nvml_function(core=True)
    def nvmlEventSetWait(self, event_set: FakeEventSet, timeout_ms: int) -> FakeEventData:
        if not isinstance(event_set, FakeEventSet) or event_set.freed:
            raise pynvml.NVMLError_InvalidArgument()
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        with self._lock:
            self._queue_scheduled(event_set)
            event_set.waits += 1
        while True:
            self._consume_xid_file()
            with self._lock:
                if event_set.queue:
                    return event_set.queue.popleft()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise pynvml.NVMLError_Timeout()
            time.sleep(min(_POLL_S, remaining))

    nvmlEventSetWait_v2 = nvmlEventSetWait

    @nvml_function(core=True)
    def nvmlEventSetFree(self, event_set: FakeEventSet) -> None:
        if not isinstance(event_set, FakeEventSet) or event_set.freed:
            raise pynvml.NVMLError_InvalidArgument()
        event_set.freed = True
        self._event_sets.discard(event_set)

    def _queue_scheduled(self, event_set: FakeEventSet) -> None:
        """Queue the fixture's XID faults due at this wait (``after_waits`` waits done)."""
        for number, (index, xid, after) in enumerate(self._scheduled):
            if number not in event_set.scheduled_done and after <= event_set.waits:
                event_set.scheduled_done.add(number)
                self._deliver(event_set, self._gpus[index], xid)

    def _consume_xid_file(self) -> None:
        """Turn new complete ``<uuid> <xid>`` lines of ``<state>/xid`` into events, each once.

        The file is only ever appended to (by ``inject_xid``, a job, ``echo >>``); this reader
        keeps its offset, so a line being written while it reads is taken on the next wait.
        """
        if self.state is None:
            return
        with self._lock:
            try:
                with (self.state / "xid").open("rb") as source:
                    size = os.fstat(source.fileno()).st_size
                    if size < self._xid_offset:  # truncated or replaced: start over
                        self._xid_offset = 0
                    source.seek(self._xid_offset)
                    chunk = source.read(size - self._xid_offset)
            except FileNotFoundError:
                self._xid_offset = 0
                return
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._xid_offset += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                fields = line.split()
                if len(fields) != 2 or not fields[1].isdigit() or fields[0] not in self._by_uuid:
                    continue
                for event_set in list(self._event_sets):
                    self._deliver(event_set, self._by_uuid[fields[0]], int(fields[1]))

    def _xid_file_size(self) -> int:
        """Where reading starts: lines written before this fake NVML existed are stale."""
        try:
            return (self.state / "xid").stat().st_size if self.state is not None else 0
        except FileNotFoundError:
            return 0

    @staticmethod
    def _deliver(event_set: FakeEventSet, device: FakeGpu | FakeMigSlice, xid: int) -> None:
        gpu = device.parent if isinstance(device, FakeMigSlice) else device
        if not event_set.registered.get(gpu.uuid, 0) & pynvml.nvmlEventTypeXidCriticalError:
            return
        gi, ci = (device.gi_id, device.ci_id) if isinstance(device, FakeMigSlice) else (NO_INSTANCE, NO_INSTANCE)
        event_set.queue.append(FakeEventData(gpu, pynvml.nvmlEventTypeXidCriticalError, xid, gi, ci))
