"""`poold why JOB`: why a job waits, why it was placed where it was, or who preempted it."""

from __future__ import annotations

from typing import Any

import click

from poold.cli.completion import job_id_argument
from poold.cli.connection import connect
from poold.cli.output import emit_choices, emit_json, emit_rejections, emit_scores, when
from poold.cli.queues import amounts_text


@click.command(name="why")
@job_id_argument()
@click.pass_context
def why(ctx: click.Context, job_id: int) -> None:
    """Explain job JOB_ID: why it waits, where it was placed and why, or who preempted it.

    A pending job: its place in its queue (priority, then age), its queue's usage against its
    guarantee, weight and limit, how many candidates each filter turns down now (nearest
    misses first), the devices the scheduler reserved for it and from when, and when each
    fallback model of its accept list (`after`) opens. A placed job: each scorer's score of the
    chosen placement beside the runners-up, as the scheduler recorded them. A preempted job:
    which job took its devices, why, when and how many times. Times are UTC.
    """
    with connect(ctx) as client:
        answer = client.why(job_id)
    if ctx.obj["output"] == "json":
        emit_json(answer)
        return
    click.echo(f"job {answer['job_id']} {answer['name']}: {answer['state']} in queue {answer['queue']} "
               f"(priority {answer['priority']}), submitted {when(answer['submitted_at'])}")
    if answer.get("reason"):
        click.echo(f"reason: {answer['reason']}")
    if answer.get("pending"):
        _pending(answer["pending"], answer["queue"])
    if answer.get("preemption"):
        _preemption(answer["preemption"])
    if answer.get("placement"):
        _placement(answer["placement"])


def _pending(pending: dict[str, Any], queue_name: str) -> None:
    place, queue = pending["place"], pending["queue"]
    click.echo(f"place in queue {queue_name}: {place['position']} of {place['pending']} pending ({place['ahead']} ahead)")
    under = pending["under_guarantee"]
    click.echo(f"queue {queue_name}: holds {amounts_text(queue['devices']) or 'nothing'} at {queue['cost_per_hour']:.2f}/h; "
               f"weight {queue['weight']:g}, guarantee {amounts_text(queue['guarantee']) or '-'}, limit {amounts_text(queue['limit']) or '-'}; "
               + (f"under its guarantee of {', '.join(under)}" if under else "not under its guarantee"))
    now = pending["now"]
    click.echo(f"now: {'would be placed' if now['placeable'] else 'would wait'}: {now['reason']}")
    emit_choices([(label, now[key]) for label, key in (("would take", "chosen"), ("runner-up", "runner_up")) if now.get(key)])
    emit_rejections(now["rejections"], title="filters now (nearest misses first)")
    if now.get("never_fits"):
        click.echo(f"never fits on this pool, even with every device idle: {now['never_fits']}")
    reservation = pending.get("reservation")
    if reservation:
        click.echo(f"reserved: from {when(reservation['start_at'])} UTC on {', '.join(reservation['nodes'])}, "
                   f"{len(reservation['devices'])} device(s): {reservation['why']}")
    else:
        click.echo(f"reserved: nothing ({pending['reservation_note']})")
    for fallback in pending["fallbacks"]:
        state = "open" if fallback["open"] else "not yet"
        click.echo(f"falls back to {fallback['model']} from {when(fallback['opens_at'])} UTC ({state})")


def _preemption(preemption: dict[str, Any]) -> None:
    by = preemption.get("by_job_id")
    whom = f"job {by}" + (f" (queue {preemption['by_queue']})" if preemption.get("by_queue") else "") if by is not None else "another job"
    if preemption["stopping"]:
        click.echo(f"being preempted: asked to stop at {when(preemption['requested_at'])} UTC for {whom}: {preemption.get('reason')}")
    if preemption["times"]:
        last = f" at {when(preemption['last_preempted_at'])} UTC" if preemption.get("last_preempted_at") else ""
        click.echo(f"preempted {preemption['times']} time(s), last{last} for {whom}: {preemption.get('reason')}")


def _placement(placement: dict[str, Any]) -> None:
    where = f" on {placement['node']}" if placement.get("node") else ""
    click.echo(f"placed at {when(placement['placed_at'])} UTC{where}")
    if placement.get("note"):
        click.echo(placement["note"])
        return
    if placement["parts"]:
        choices = [(f"rank {rank}", part) for rank, part in enumerate(placement["parts"])]
    else:
        choices = [("chosen", placement["chosen"])] + [("runner-up", c) for c in placement["runners_up"]]
    emit_choices(choices)
    emit_scores(choices)


COMMANDS = [why]
