"""What a caller may do with a job, once its token says who it is (``poold.services.tokens``).

Admins may do everything with every job. A user sees every job's summary, but only the
owner sees a job's environment, reads its log and cancels it; a job's owner is the user
whose token submitted it. Which Unix users a user's jobs may run as is the daemon's
``auth.run_as`` (and ``auth.run_as_own_name``).
"""

from __future__ import annotations

from poold.db.models import JobModel
from poold.services import Forbidden
from poold.services.tokens import Principal
from poold.settings import AuthSettings


def owns(who: Principal, job: JobModel) -> bool:
    """Whether ``who`` may act on ``job`` as its owner: an admin, or the user who submitted it."""
    return who.role == "admin" or (who.role == "user" and job.owner is not None and job.owner == who.user)


def check_owner(who: Principal, job: JobModel, what: str) -> None:
    """403 naming ``job_id`` unless ``who`` may ``what`` the job (read the log of, cancel)."""
    if not owns(who, job):
        whose = f"user {job.owner}'s" if job.owner else "from before tokens (admins only)"
        raise Forbidden(f"job {job.id} is {whose}: {who} may not {what} it", field="job_id")


def check_cancel(who: Principal, job: JobModel, force: bool) -> None:
    """403 unless ``who`` may cancel ``job``: its owner or an admin; by force, an admin only."""
    check_owner(who, job, "cancel")
    if force and who.role != "admin":
        raise Forbidden(f"{who} may not cancel by force: that is for admins", field="force")


def check_run_as(who: Principal, unix_user: str | None, settings: AuthSettings) -> None:
    """403 naming ``spec.user`` when ``who`` may not run jobs as ``unix_user`` (None: the
    agent's default user, which anyone may)."""
    if unix_user is None or who.role == "admin" or (who.user is not None and settings.may_run_as(who.user, unix_user)):
        return
    allowed = sorted(settings.run_as.get(who.user or "", []) + ([who.user] if settings.run_as_own_name and who.user else []))
    may = f"may run as {', '.join(allowed)}" if allowed else "may name no user"
    raise Forbidden(f"{who} may not run jobs as Unix user {unix_user!r} ({may}: the daemon's auth.run_as)", field="spec.user")
