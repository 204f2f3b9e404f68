"""Commands on jobs: submit, plan, jobs, job, cancel, logs."""

from __future__ import annotations

import sys
import time
from datetime import datetime

import click
from rich.text import Text

from poold.cli.completion import job_id_argument
from poold.cli.connection import connect
from poold.client import PooldClient
from poold.cli.output import console, devices_text, emit_choices, emit_json, emit_rejections, emit_table, gib, reason_text, when
from poold.jobspec import parse_job_file
from poold.scheduler.reasons import reason_kind  # the scheduler's own measure of a reason's kind

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}
# Exit codes of `poold submit --wait` for outcomes without an exit code of their own.
OUTCOME_EXIT = {"succeeded": 0, "cancelled": 130, "timed_out": 124, "lost": 1}


def outcome_exit_code(job: dict) -> int:
    """0 for success; the job's own exit code for a failure (1 if it had none); 130 cancelled, 124 timed out."""
    if job["state"] == "failed":
        code = job.get("exit_code")
        return code if isinstance(code, int) and 0 < code < 256 else 1
    return OUTCOME_EXIT.get(job["state"], 1)


@click.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="Follow the job to its end, streaming its output; exit with its outcome.")
@click.option("--poll", default=0.5, show_default=True, help="Seconds between status checks with --wait.")
@click.pass_context
def submit(ctx: click.Context, job_file: str, wait: bool, poll: float) -> None:
    """Submit JOB_FILE (job.toml) and print the job id.

    With --wait, follow it to its end: why it waits (again only when the kind of reason
    changes), where it was placed (once), its output as it comes (as `poold logs --follow`),
    and a last line with its outcome; a failure prints its cause (exit code, what the agent
    said, the job's last events). Exit 0 when the job succeeds, its exit code when it fails,
    124 when it ran past max_runtime, 130 when it was cancelled. A job lost with its node and
    submitted again (its `retries`) is followed to the retry's end. Status lines go to stderr,
    the job's output to stdout; with `poold -o json` the output is not streamed and the job as
    it ended is printed instead.
    """
    spec = parse_job_file(job_file)
    json_out = ctx.obj["output"] == "json"
    with connect(ctx) as client:
        job = client.submit(spec.model_dump(mode="json"))
        if json_out and not wait:
            emit_json(job)
            return
        if not json_out:
            click.echo(job["id"])
        if not wait:
            return
        job = follow_job(client, job, poll, stream=not json_out)
    if json_out:
        emit_json(job)
    sys.exit(outcome_exit_code(job))


def follow_job(client: PooldClient, job: dict, poll: float, stream: bool = True) -> dict:
    """Follow ``job`` to its end and say so on stderr (its output, with ``stream``, on stdout);
    the job as it ended (a retry's, when it was lost and submitted again)."""
    said, offset = None, 0
    while True:
        if job["state"] == "pending":
            kind = reason_kind(job["reason"]) if job.get("reason") else None  # None: no pass has looked at it yet
            if kind not in (said, None):
                status(f"job {job['id']} pending: {job['reason']}")
                said = kind
            time.sleep(poll)
            job = client.job(job["id"])
            continue
        if job["state"] not in TERMINAL:
            status(f"job {job['id']} placed {placement_text(job)}")
            said = None
            offset, job = follow_log(client, job["id"], offset, poll, until=TERMINAL | {"pending"}, stream=stream)
            continue
        if job.get("requeued_as"):
            cause = ending(job)
            status(f"job {job['id']} {job['state']}" + (f": {cause}" if cause else "") + f"; following its retry, job {job['requeued_as']}")
            job, said, offset = client.job(job["requeued_as"]), None, 0
            continue
        report_end(job)
        return job


def status(line: str) -> None:
    click.echo(line, err=True)


def placement_text(job: dict) -> str:
    """Where a placed job runs, short: "on l4: 1x L4 (GPU-l4-0) at 0.80/h"."""
    uuids = [a["device_uuid"] for a in job.get("allocations") or []]
    held = f"{devices_text(job)} ({', '.join(uuids)})" if uuids else "CPU only"
    return f"on {job.get('node')}: {held} at {job.get('price_per_hour') or 0:.2f}/h"


def ending(job: dict) -> str | None:
    """What the job's end event says (the agent's reason for a failure), if it has one."""
    end = next((e for e in reversed(job.get("events") or []) if e["kind"] == f"job.{job['state']}"), None)
    return end["message"] if end else None


def report_end(job: dict, last_events: int = 5) -> None:
    """The outcome in one line; for anything but success, its cause and the job's last events
    since it was placed (the placement was said when it happened)."""
    took = ""
    if job.get("started_at") and job.get("ended_at"):
        seconds = (datetime.fromisoformat(job["ended_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
        took = f" after {seconds:.1f} s"
    code = f" (exit {job['exit_code']})" if job.get("exit_code") is not None and job["state"] != "succeeded" else ""
    status(f"job {job['id']} {job['state']}{code}{took}")
    if job["state"] == "succeeded":
        return
    status(f"cause: {ending(job) or job.get('reason') or 'not reported'}")
    for event in [e for e in job.get("events") or [] if e["kind"] not in ("job.submitted", "job.placed")][-last_events:]:
        status(f"  {when(event['at'])}  {event['kind']}: {event['message']}")


@click.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.pass_context
def plan(ctx: click.Context, job_file: str) -> None:
    """Show where JOB_FILE would be placed now, without submitting it.

    Prints the chosen placement and the runner-up on another chip model (price, speed, cost
    per unit of work, each scorer's score), how many candidates each filter turned down, and
    whether the job could ever fit on this pool. Exits 0 when it would be placed now, 2 when
    it would wait, 3 when it can never fit.
    """
    spec = parse_job_file(job_file)
    with connect(ctx) as client:
        result = client.plan(spec.model_dump(mode="json"))
    if ctx.obj["output"] == "json":
        emit_json(result)
    else:
        verdict = "would be placed" if result["placeable"] else "would wait"
        click.echo(f"{verdict}: {result['reason']}")
        choices = [(label, result[key]) for label, key in (("chosen", "chosen"), ("runner-up", "runner_up")) if result.get(key)]
        if result.get("parts"):  # a gang: one row per part
            choices = [(f"rank {rank}", part) for rank, part in enumerate(result["parts"])]
        emit_choices(choices)
        emit_rejections(result["rejections"])
        if result.get("never_fits"):
            click.echo(f"never fits on this pool, even with every device idle: {result['never_fits']}")
    sys.exit(0 if result["placeable"] else 3 if result.get("never_fits") else 2)


@click.command(name="jobs")
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--limit", default=200, show_default=True)
@click.pass_context
def list_jobs(ctx: click.Context, states: tuple[str, ...], limit: int) -> None:
    """List jobs, newest first: every user's (OWNER is who submitted each).

    REASON is the first clause of why a pending job waits, or of why a placed one went where
    it did (`poold job ID` has all of it, `poold why ID` more)."""
    with connect(ctx) as client:
        jobs = client.jobs(list(states), limit)
    if ctx.obj["output"] == "json":
        emit_json(jobs)
        return
    rows = []
    for job in jobs:
        devices = devices_text(job)
        price = f"{job['price_per_hour']:.2f}" if job.get("price_per_hour") is not None else None
        state = "stopping" if job.get("stopping") else job["state"]
        rows.append([job["id"], job["name"], job.get("owner"), job["queue"], state, job.get("node"), devices, price,
                     when(job["submitted_at"]), reason_text(job.get("reason"))])
    emit_table(["ID", "NAME", "OWNER", "QUEUE", "STATE", "NODE", "DEVICES", "PRICE/H", "SUBMITTED", "REASON"], rows)


@click.command(name="job")
@job_id_argument()
@click.pass_context
def show_job(ctx: click.Context, job_id: int) -> None:
    """Show one job: where it runs and why, or why it still waits, and its events. A gang (a
    job over several nodes) lists its parts: each one's job id, rank, node and state. Another
    user's job is shown without its environment."""
    with connect(ctx) as client:
        job = client.job(job_id)
    if ctx.obj["output"] == "json":
        emit_json(job)
        return
    console.print(Text.assemble((f"job {job['id']}", "bold"), f" {job['name']}  state: ", (job["state"], "bold"),
                                f"  queue: {job['queue']}  priority: {job['priority']}  owner: {job.get('owner') or '-'}"))
    if "spec.env" in job.get("hidden", []):
        console.print("environment: hidden (another user's job)")
    if job.get("node"):
        console.print(f"node: {job['node']}  price: {job.get('price_per_hour') or 0:.2f}/h")
    label = {"pending": "why it waits", "assigned": "placement", "running": "placement"}.get(job["state"], "reason")
    if job.get("reason"):
        console.print(f"{label}: {job['reason']}")
    if job.get("preemptions"):
        console.print(f"preempted {job['preemptions']} time(s), last for job {job['preempted_by']}: {job['preempt_reason']}")
    if job.get("stopping"):
        console.print(f"stopping: its agent stops it for job {job['preempted_by']} ({job['preempt_reason']})")
    if job.get("retry_of"):
        console.print(f"attempt {job['attempt']}: submitted again after job {job['retry_of']} was lost")
    if job.get("requeued_as"):
        console.print(f"submitted again as job {job['requeued_as']}")
    if job.get("gang_of") is not None:
        console.print(f"part of gang job {job['gang_of']}, rank {job['gang_rank']}")
    if job.get("exit_code") is not None:
        console.print(f"exit code: {job['exit_code']}")
    if job.get("isolation"):
        console.print(f"isolation: {job['isolation']}")
    if job.get("allocations"):
        emit_table(
            ["DEVICE", "MODEL", "KIND", "SHARE", "MEMORY", "PRICE/H"],
            [[a["device_uuid"], a["device_model"], a["kind"], f"{a['share']:g}", gib(a["memory_mib"]), f"{a['price_per_hour']:.2f}"] for a in job["allocations"]],
        )
    if job.get("parts"):
        emit_table(["PART", "RANK", "NODE", "STATE", "DEVICES", "EXIT"],
                   [[p["id"], p["rank"], p.get("node"), p["state"], p["devices"], p.get("exit_code")] for p in job["parts"]],
                   title="parts (gang)")
    emit_table(["AT", "EVENT", "MESSAGE"], [[when(e["at"]), e["kind"], e["message"]] for e in job.get("events", [])], title="events")


@click.command()
@job_id_argument()
@click.option("--force", is_flag=True, help="End the job now, whatever its state, and release its devices (administrators).")
@click.pass_context
def cancel(ctx: click.Context, job_id: int, force: bool) -> None:
    """Cancel a job of yours (admins: anyone's): a pending one ends at once, a running one is killed by its agent.

    With --force the job ends `cancelled` at once, in any state, without waiting for its
    agent (one that cannot report, or is gone); its devices, CPU cores and memory are
    released, and the agent, if it still runs the job, is told to kill it.
    """
    with connect(ctx) as client:
        job = client.cancel(job_id, force)
    if ctx.obj["output"] == "json":
        emit_json(job)
    elif force:
        click.echo(f"job {job_id} cancelled by force: {job.get('reason')}; its devices are released")
    elif job["state"] == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id}: cancel requested, the agent on {job.get('node')} will stop it")


@click.command()
@job_id_argument()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.pass_context
def logs(ctx: click.Context, job_id: int, follow: bool) -> None:
    """Print a job's output (stdout and stderr, as its agent shipped them): your own jobs' (admins: anyone's)."""
    with connect(ctx) as client:
        follow_log(client, job_id, follow=follow)


def follow_log(client: PooldClient, job_id: int, offset: int = 0, poll: float = 0.5, follow: bool = True,
               until: set[str] = TERMINAL, stream: bool = True) -> tuple[int, dict | None]:
    """Print ``job_id``'s output on stdout from byte ``offset`` on (nothing without ``stream``);
    with ``follow``, keep printing every ``poll`` seconds until the job's state is one of
    ``until``. The new offset, and the job as last read (None without ``follow``)."""
    while True:
        chunk = client.log(job_id, offset) if stream else b""
        if chunk:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            offset += len(chunk)
            continue
        if not follow:
            return offset, None
        job = client.job(job_id)
        if job["state"] in until:
            rest = client.log(job_id, offset) if stream else b""  # the last bytes can arrive with the end report
            sys.stdout.buffer.write(rest)
            sys.stdout.flush()
            return offset + len(rest), job
        time.sleep(poll)


COMMANDS = [submit, plan, list_jobs, show_job, cancel, logs]
