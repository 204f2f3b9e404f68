"""Who a job runs as: the default user for jobs that name none, the node's allow-list, root
only where allowed, and the reasons a refusal gives."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from agents.users import UserPolicy, UserRefused

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the rules apply to an agent running as root (one that is not cannot switch users)")


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


@needs_root
def test_a_job_that_names_no_user_runs_as_the_default_user() -> None:
    run_as = UserPolicy().resolve(None)
    nobody = pwd.getpwnam("nobody")
    assert (run_as.name, run_as.uid, run_as.gid, run_as.home) == ("nobody", nobody.pw_uid, nobody.pw_gid, nobody.pw_dir)
    assert nobody.pw_gid in run_as.groups and 0 not in run_as.groups


@needs_root
@pytest.mark.parametrize(
    ("policy", "requested", "expected"),
    [
        (UserPolicy(), "daemon", "daemon"),  # no allow-list: any user but root
        (UserPolicy(allowed_users=("bin",)), "bin", "bin"),
        (UserPolicy(allowed_users=("bin",)), "nobody", "nobody"),  # the default user always may
        (UserPolicy(allow_root=True), "root", "root"),
        (UserPolicy(default_user="daemon", allowed_users=()), None, "daemon"),
    ],
)
def test_allowed_users(policy: UserPolicy, requested: str | None, expected: str) -> None:
    assert policy.resolve(requested).uid == uid(expected)


@needs_root
@pytest.mark.parametrize(
    ("policy", "requested", "reason"),
    [
        (UserPolicy(allowed_users=("bin",)), "daemon", "user: 'daemon' is not allowed on this node (allowed_users: nobody, bin)"),
        (UserPolicy(), "root", "user: 'root' is root (uid 0), which this node does not allow (allow_root = false)"),
        (UserPolicy(default_user="root"), None,
         "default_user: 'root' is root (uid 0), which this node does not allow (allow_root = false)"),
        (UserPolicy(), "no-such-user-xyz", "unknown user 'no-such-user-xyz' on this node"),
        (UserPolicy(default_user="no-such-user-xyz"), None, "default_user: no user 'no-such-user-xyz' on this node (agent setting)"),
        (UserPolicy(job_groups=("no-such-group-xyz",)), None, "job_groups: no group 'no-such-group-xyz' on this node (agent setting)"),
    ],
)
def test_refusals_name_the_field(policy: UserPolicy, requested: str | None, reason: str) -> None:
    with pytest.raises(UserRefused) as refused:
        policy.resolve(requested)
    assert str(refused.value) == reason


@needs_root
def test_job_groups_are_added_to_the_users_own() -> None:
    daemon_gid = grp.getgrnam("daemon").gr_gid
    run_as = UserPolicy(job_groups=("daemon",)).resolve("bin")
    assert daemon_gid in run_as.groups and pwd.getpwnam("bin").pw_gid in run_as.groups


@pytest.mark.skipif(os.geteuid() == 0, reason="an agent running as root can switch users")
def test_an_agent_that_is_not_root_runs_jobs_as_itself() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert UserPolicy().resolve(None) is None
    assert UserPolicy().resolve(me) is None
    with pytest.raises(UserRefused, match="cannot run as user 'root': the agent is not running as root"):
        UserPolicy(allow_root=True).resolve("root")
