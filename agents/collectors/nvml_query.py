"""The one door to NVML: every NVML call of the collector and the XID watcher goes through here.

"Not supported" is a value: a query the hardware, the driver or the ``pynvml`` version
cannot answer returns its ``default`` (None unless told) instead of raising, and a
missing function is logged once per process (nvitop's ``nvmlQuery`` idea). Two kinds of
error still raise, because the caller must act on them:

- the device is gone (``GpuIsLost``, ``ResetRequired``): the collector reports that one
  device unhealthy and goes on with the others (:attr:`NvmlQuery.device_errors`);
- the library itself is unusable (``Uninitialized``, ``DriverNotLoaded``,
  ``LibraryNotFound``, ``LibRmVersionMismatch``): the whole pass is an error.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.collectors.base import log_once

log = logging.getLogger(__name__)

_DEVICE_ERRORS = ("NVMLError_GpuIsLost", "NVMLError_ResetRequired")
_LIBRARY_ERRORS = ("NVMLError_Uninitialized", "NVMLError_DriverNotLoaded", "NVMLError_LibraryNotFound",
                   "NVMLError_LibRmVersionMismatch")
# Expected answers from hardware that cannot tell; not worth a log line.
_QUIET_ERRORS = ("NVMLError_NotSupported", "NVMLError_NotFound", "NVMLError_InvalidArgument",
                 "NVMLError_Timeout", "NVMLError_NoData")


def _classes(nvml: Any, names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    return tuple(getattr(nvml, n) for n in names if hasattr(nvml, n))


def to_str(value: Any) -> Any:
    """``bytes`` from pynvml releases before 11.515 as ``str``; anything else unchanged."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class NvmlQuery:
    """Call NVML functions by name on one ``pynvml``-like module (real or fake)."""

    def __init__(self, nvml: Any):
        self.nvml = nvml
        self.error = nvml.NVMLError
        self.device_errors = _classes(nvml, _DEVICE_ERRORS)
        self.library_errors = _classes(nvml, _LIBRARY_ERRORS)
        self._raised = self.device_errors + self.library_errors
        self._quiet = _classes(nvml, _QUIET_ERRORS)
        self._function_not_found = _classes(nvml, ("NVMLError_FunctionNotFound",))
        # pynvml raises this (not an NVMLError) when an unversioned function is missing.
        self._mismatch = _classes(nvml, ("NVMLLibraryMismatchError",))

    def __call__(self, function: str, *args: Any, default: Any = None) -> Any:
        """``nvml.<function>(*args)``, or ``default`` when NVML cannot answer it."""
        fn = getattr(self.nvml, function, None)
        if fn is None:
            log_once(log, logging.INFO, f"nvml-missing:{function}",
                     "this pynvml has no %s; reporting it as unknown", function)
            return default
        try:
            return fn(*args)
        except self.error as err:
            if isinstance(err, self._raised):
                raise
            if isinstance(err, self._function_not_found):
                log_once(log, logging.INFO, f"nvml-missing:{function}",
                         "the NVIDIA driver has no %s; reporting it as unknown", function)
            elif not isinstance(err, self._quiet):
                log_once(log, logging.WARNING, f"nvml-error:{function}:{type(err).__name__}",
                         "NVML %s failed (%s); reporting it as unknown", function, err)
            return default
        except self._mismatch as err:
            log_once(log, logging.INFO, f"nvml-missing:{function}", "NVML %s: %s", function, err)
            return default
