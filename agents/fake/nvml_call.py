"""The checks every fake NVML function makes before it answers, as the real library does."""

from __future__ import annotations

import functools
from typing import Any

import pynvml

from agents.fake.nvml_model import FakeGpu, FakeMigSlice

#: Calls a lost GPU still answers from the driver's cache.
IDENTITY_FUNCTIONS = {"nvmlDeviceGetHandleByIndex", "nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetPciInfo"}


def nvml_function(*, core: bool = False, mig: bool = False, init: bool = True):
    """Wrap one fake NVML function with the checks the real library makes first.

    ``core``: never hit by the ``not_supported`` fault; ``mig``: answers on a MIG handle
    (everything else raises NotSupported there); ``init``: needs ``nvmlInit`` first.
    """

    def wrap(fn):
        name = fn.__name__

        @functools.wraps(fn)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if init and self._refcount == 0:
                raise pynvml.NVMLError_Uninitialized()
            if name in self._missing:
                raise pynvml.NVMLError_FunctionNotFound()
            for arg in args[:2]:
                if isinstance(arg, (FakeGpu, FakeMigSlice)):
                    gpu = arg.parent if isinstance(arg, FakeMigSlice) else arg
                    if gpu.lost and name not in IDENTITY_FUNCTIONS:
                        raise pynvml.NVMLError_GpuIsLost()
                    if isinstance(arg, FakeMigSlice) and not mig:
                        raise pynvml.NVMLError_NotSupported()
            if not core and (self._not_supported is True or name in self._not_supported):
                raise pynvml.NVMLError_NotSupported()
            return fn(self, *args, **kwargs)

        return call

    return wrap
