"""Health events: a thread that waits on NVML critical-XID events and reports them at once.

:class:`XidWatcher` creates an NVML event set, registers critical-XID events (mask 0x8) on
every GPU, and loops on ``nvmlEventSetWait(set, wait_ms)``; ``NVMLError_Timeout`` just
means nothing came. For each XID it calls ``on_event(uuid, xid, reason)`` with the GPU's
uuid, so the agent can mark the device unhealthy and heartbeat immediately; the watcher
built by :func:`agents.inventory.make_health_watcher` also tells the NVIDIA collector,
which keeps reporting the GPU (and its MIG slices) unhealthy in later inventories.

XIDs that report an application's own fault (13 graphics exception, 31 MMU fault, 43
stopped, 45 preempted, 68 decoder error, 109 context switch timeout) say nothing about
the GPU and are ignored by default, as the Kubernetes device plugin does; pass
``ignored_xids=()`` to report every critical XID.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from agents.collectors.base import describe
from agents.collectors.nvml_query import NvmlQuery, to_str

log = logging.getLogger(__name__)

XID_CRITICAL_MASK = 0x8
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
XID_REASONS = {
    48: "double-bit ECC error",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failed",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}

EventCallback = Callable[[str, int, str], None]
_FAILED = object()


def xid_reason(xid: int) -> str:
    """Human text for an XID: "XID 79: GPU has fallen off the bus"."""
    text = XID_REASONS.get(xid)
    return f"XID {xid}: {text}" if text else f"XID {xid}: critical XID error"


def _handle_key(handle: Any) -> int:
    """A hashable identity for an NVML handle: the pointer's address, or the object's id."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value or id(handle)
    except (TypeError, ctypes.ArgumentError):
        return id(handle)


class XidWatcher:
    """Waits for critical XID events on every GPU and calls ``on_event(uuid, xid, reason)``.

    ``start()`` initialises NVML (its own reference), registers the GPUs and starts the
    thread; ``stop()`` returns within about ``wait_ms``. Exceptions from ``on_event`` are
    logged and the watcher goes on.
    """

    def __init__(self, nvml: Any, on_event: EventCallback, *, wait_ms: int = 200,
                 ignored_xids: Collection[int] = APPLICATION_XIDS):
        self.query = NvmlQuery(nvml)
        self.nvml = nvml
        self.on_event = on_event
        self.wait_ms = wait_ms
        self.ignored_xids = frozenset(ignored_xids)
        self.registered: dict[int, str] = {}  # handle key -> GPU uuid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_set: Any = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Register critical-XID events on every GPU and start waiting; raises NVMLError if NVML is unusable."""
        if self.running:
            return
        self.nvml.nvmlInit()
        try:
            self._event_set = self.nvml.nvmlEventSetCreate()
            self._register_all()
        except BaseException:
            self.nvml.nvmlShutdown()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="poold-xid-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop waiting and release NVML; returns once the thread has ended (or ``timeout_s``)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s if timeout_s is not None else self.wait_ms / 1000 + 2.0)
        if thread.is_alive():
            log.warning("XID watcher did not stop within the timeout")
            return
        self._thread = None

    def __enter__(self) -> "XidWatcher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _register_all(self) -> None:
        q = self.query
        for index in range(q("nvmlDeviceGetCount", default=0)):
            try:
                handle = q("nvmlDeviceGetHandleByIndex", index)
                uuid = to_str(q("nvmlDeviceGetUUID", handle)) if handle is not None else None
                if handle is None or uuid is None:
                    continue
                supported = q("nvmlDeviceGetSupportedEventTypes", handle)
                if supported is not None and not supported & XID_CRITICAL_MASK:
                    log.info("GPU %s cannot report XID events", uuid)
                    continue
                if q("nvmlDeviceRegisterEvents", handle, XID_CRITICAL_MASK, self._event_set,
                     default=_FAILED) is _FAILED:
                    log.info("GPU %s: registering XID events failed", uuid)
                    continue
            except q.device_errors as err:
                log.warning("GPU %d is lost; no XID events from it (%s)", index, describe(err))
                continue
            self.registered[_handle_key(handle)] = uuid
        log.info("XID watcher registered %d GPU(s)", len(self.registered))

    def _run(self) -> None:
        q = self.query
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    data = q("nvmlEventSetWait", self._event_set, self.wait_ms)
                except q.error as err:
                    log.warning("XID watcher: %s", describe(err))
                    data = None
                if data is None:
                    # Timeout is the usual case; a wait that failed at once must not spin.
                    if time.monotonic() - started < self.wait_ms / 2000:
                        self._stop.wait(self.wait_ms / 1000)
                    continue
                self._dispatch(data)
        finally:
            q("nvmlEventSetFree", self._event_set)
            try:
                self.nvml.nvmlShutdown()
            except q.error as err:
                log.debug("nvmlShutdown: %s", err)

    def _dispatch(self, data: Any) -> None:
        if not int(data.eventType) & XID_CRITICAL_MASK:
            return
        xid = int(data.eventData)
        uuid = self.registered.get(_handle_key(data.device))
        if uuid is None:
            try:
                uuid = to_str(self.query("nvmlDeviceGetUUID", data.device))
            except self.query.device_errors:
                uuid = None
        if uuid is None:
            log.warning("XID %d from a GPU the watcher cannot name", xid)
            return
        if xid in self.ignored_xids:
            log.info("GPU %s: XID %d (an application fault) ignored", uuid, xid)
            return
        reason = xid_reason(xid)
        log.warning("GPU %s: %s", uuid, reason)
        try:
            self.on_event(uuid, xid, reason)
        except Exception:
            log.exception("XID callback failed for GPU %s, XID %d", uuid, xid)
