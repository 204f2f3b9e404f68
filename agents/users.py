"""Who a job runs as: the user it names, or the agent's ``default_user``; root only if allowed.

An agent running as root starts every job as a Unix user:

- a job that names no ``user`` runs as ``default_user`` (``nobody`` unless configured);
- a job's ``user`` must be one of ``allowed_users`` when that list is set (``default_user``
  always is); which poold users may name which Unix users is the daemon's to decide, this
  list is the node's own word on it;
- root (uid 0, under any name) only where ``allow_root = true``;
- the job gets its user's groups plus ``job_groups`` (e.g. ``render`` for AMD GPUs).

An agent that is not root cannot switch users: its jobs run as the agent's own user, and a
job that names another user is refused. A refusal ends the job ``failed`` before it starts,
with the reason in its event and at the top of its log.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from typing import Any


class UserRefused(Exception):
    """The job may not run as the user it asks for (or the node's default user is unusable)."""


@dataclass(frozen=True)
class RunAs:
    """A resolved Unix identity, as the shim applies it (``setgroups``, ``setgid``, ``setuid``)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "gid": self.gid, "groups": list(self.groups), "home": self.home}


@dataclass(frozen=True)
class UserPolicy:
    """The node's rules for job users (``default_user``, ``allowed_users``, ``allow_root``,
    ``job_groups`` in the agent's settings)."""

    default_user: str = "nobody"
    allowed_users: tuple[str, ...] | None = None
    allow_root: bool = False
    job_groups: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any) -> "UserPolicy":
        allowed = tuple(settings.allowed_users) if settings.allowed_users is not None else None
        return cls(settings.default_user, allowed, settings.allow_root, tuple(settings.job_groups))

    def resolve(self, requested: str | None) -> RunAs | None:
        """The identity a job asking for ``requested`` runs as; None: the agent's own (an agent
        that is not root, for a job that names no user or the agent's own). Raises
        :class:`UserRefused` with the reason."""
        if os.geteuid() != 0:
            if requested is None or _entry(requested, "user").pw_uid == os.geteuid():
                return None
            raise UserRefused(f"cannot run as user {requested!r}: the agent is not running as root")
        name = requested if requested is not None else self.default_user
        if requested is not None and self.allowed_users is not None and requested not in (*self.allowed_users, self.default_user):
            raise UserRefused(f"user: {requested!r} is not allowed on this node (allowed_users: "
                              f"{', '.join([self.default_user, *self.allowed_users])})")
        entry = _entry(name, "user" if requested is not None else "default_user")
        if entry.pw_uid == 0 and not self.allow_root:
            field = "user" if requested is not None else "default_user"
            raise UserRefused(f"{field}: {name!r} is root (uid 0), which this node does not allow (allow_root = false)")
        groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
        for group in self.job_groups:
            try:
                groups.add(grp.getgrnam(group).gr_gid)
            except KeyError:
                raise UserRefused(f"job_groups: no group {group!r} on this node (agent setting)") from None
        return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, tuple(sorted(groups)), entry.pw_dir)


def _entry(name: str, field: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if field == "default_user":
            raise UserRefused(f"default_user: no user {name!r} on this node (agent setting)") from None
        raise UserRefused(f"unknown user {name!r} on this node") from None
