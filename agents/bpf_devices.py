"""Device control on cgroup v2: a BPF program of type BPF_PROG_TYPE_CGROUP_DEVICE per job.

cgroup v2 has no ``devices.allow``: the kernel asks the BPF programs attached to a process's
cgroup (and to every cgroup above it) whether it may open or create a device file, by type
and major:minor. This module writes such a program from a list of rules, loads it with the
raw ``bpf(2)`` system call (no libbpf, no bpftool) and attaches it to the job's cgroup with
``BPF_F_ALLOW_MULTI``, so that programs attached higher up (systemd's ``DevicePolicy``) still
apply: a device must be allowed by all of them.

The program, per rule (runc's device filter has the same shape)::

    r2 = ctx->access_type & 0xffff       # the type: 1 block, 2 char
    r4 = ctx->major; r5 = ctx->minor
    if r2 != TYPE goto next; if r4 != MAJOR goto next; if r5 != MINOR goto next
    return 1                             # allowed (any access: read, write, mknod)
    next: ...
    return 0                             # nothing matched: denied

An attached program holds on to the cgroup's own reference, so it lives until the cgroup is
removed; the file descriptors used to load and attach it are closed at once.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR = 1, 2
ATTR_SIZE = 128  # bytes of union bpf_attr passed; the kernel reads the fields it knows
SYSCALL_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

# eBPF opcodes used: load a 32-bit word, and-immediate (32 bit), jump-if-not-equal-immediate,
# move-immediate (64 bit), exit.
LDX_W, AND_K, JNE_K, MOV_K, EXIT = 0x61, 0x54, 0x55, 0xB7, 0x95


class BpfError(OSError):
    """The kernel refused to load or attach the program; the message says which and why."""


@dataclass(frozen=True)
class DeviceRule:
    """Device files of type ``kind`` (``c`` char, ``b`` block) and major:minor that a job may
    open; None stands for any number (``c 136:*`` is every pseudo-terminal)."""

    kind: str
    major: int | None
    minor: int | None

    def __str__(self) -> str:
        """As ``devices.allow`` takes it (without the access): ``c 195:0``, ``c 136:*``."""
        major = "*" if self.major is None else self.major
        minor = "*" if self.minor is None else self.minor
        return f"{self.kind} {major}:{minor}"


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program(rules: Sequence[DeviceRule]) -> bytes:
    """The eBPF instructions that allow exactly ``rules`` (see the module's docstring)."""
    code = [_insn(LDX_W, 2, 1, 0), _insn(AND_K, 2, 0, 0, 0xFFFF), _insn(LDX_W, 4, 1, 4), _insn(LDX_W, 5, 1, 8)]
    for rule in rules:
        tests = [(2, BPF_DEVCG_DEV_CHAR if rule.kind == "c" else BPF_DEVCG_DEV_BLOCK)]
        tests += [(register, value) for register, value in ((4, rule.major), (5, rule.minor)) if value is not None]
        for position, (register, value) in enumerate(tests):
            # Past the tests left and the two instructions that allow.
            code.append(_insn(JNE_K, register, 0, len(tests) - position - 1 + 2, value))
        code += [_insn(MOV_K, 0, 0, 0, 1), _insn(EXIT)]
    code += [_insn(MOV_K, 0, 0, 0, 0), _insn(EXIT)]
    return b"".join(code)


def _bpf(command: int, attr: bytes) -> int:
    number = SYSCALL_BPF.get(platform.machine())
    if number is None:
        raise BpfError(0, f"no bpf(2) system call number known for {platform.machine()}")
    buffer = ctypes.create_string_buffer(attr, ATTR_SIZE)
    result = ctypes.CDLL(None, use_errno=True).syscall(number, command, buffer, ATTR_SIZE)
    if result < 0:
        err = ctypes.get_errno()
        raise BpfError(err, os.strerror(err))
    return result


def load(rules: Sequence[DeviceRule]) -> int:
    """Load the program for ``rules``; its file descriptor (close it once attached)."""
    code = program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(4096)
    attr = struct.pack("<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8, ctypes.addressof(insns),
                       ctypes.addressof(license_), 1, len(log), ctypes.addressof(log), 0, 0, b"poold_devices", 0,
                       BPF_CGROUP_DEVICE)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfError as exc:
        verifier = log.value.decode(errors="replace").strip().splitlines()
        detail = f" (verifier: {verifier[-1]})" if verifier else ""
        raise BpfError(exc.errno, f"cannot load a device program: {exc.strerror}{detail}") from None


def attach(cgroup_dir: Path, rules: Sequence[DeviceRule]) -> None:
    """Allow the processes of ``cgroup_dir`` (a cgroup v2 directory) exactly the device files of ``rules``."""
    prog = load(rules)
    try:
        cgroup = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", cgroup, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI))
        except BpfError as exc:
            raise BpfError(exc.errno, f"cannot attach a device program to {cgroup_dir}: {exc.strerror}") from None
        finally:
            os.close(cgroup)
    finally:
        os.close(prog)


def probe() -> str | None:
    """None when this process may load device programs; else why not."""
    try:
        os.close(load([]))
    except BpfError as exc:
        return str(exc.strerror)
    return None
