"""``poold demo``: run the demo pool end to end and show where each job went and why."""

from __future__ import annotations

import sys
import time

import click
from rich.text import Text

from poold.cli.output import console, devices_text, emit_json, emit_table


@click.command()
@click.option("--keep", is_flag=True, help="Leave the pool running at the end and print how to reach and stop it.")
@click.option("--timeout", default=45.0, show_default=True, help="Seconds to wait for the example jobs to end.")
@click.pass_context
def demo(ctx: click.Context, keep: bool, timeout: float) -> None:
    """Start a demo pool (SQLite, fake devices), run the example jobs, show where each went and why.

    The site: an 8x H100 HGX node with NVLink and GPU 0 in MIG mode, 4x A100, 2x L4,
    8x Ascend 910B and 2x Alveo U250. The daemon and agents are real processes; the demo makes
    its own tokens (an admin's, user demo's, a join token its agents join with) and submits as
    user demo; the jobs really run and see only their devices. Ends by itself and leaves
    nothing running.
    """
    from poold import demo as pool_demo

    started = time.monotonic()
    workdir = pool_demo.make_workdir()
    json_out = ctx.obj["output"] == "json"
    say = (lambda text: click.echo(text, err=True)) if json_out else (lambda text: console.print(text))
    pool = None
    keep_running = False
    try:
        pool = pool_demo.start_pool(workdir, say)
        with pool.client() as client:
            nodes = client.nodes()
        if not json_out:
            emit_table(
                ["NODE", "DEVICES", "FREE"],
                [[n["name"], n["devices"], n["devices_free"]] for n in nodes],
                title="the demo site",
            )
        files = pool_demo.example_files()
        say(f"submitting {len(files)} example jobs from config/examples and one that can never fit ...")
        jobs, refusal = pool_demo.run_jobs(pool, files, timeout)
        if json_out:
            emit_json({"jobs": jobs, "refused": {"name": "too-big", "error": refusal}, "url": pool.url if keep else None,
                       "token": pool.tokens.admin if keep else None})
        else:
            _show(jobs, refusal)
        failed = [job for job in jobs if job["state"] != "succeeded"]
        say(f"done in {time.monotonic() - started:.1f} s: {len(jobs) - len(failed)} of {len(jobs)} example jobs succeeded")
        if keep:
            pids = " ".join(str(p.pid) for p in pool.processes.values())
            say(f"the pool stays up: export POOLD_URL={pool.url} POOLD_TOKEN={pool.tokens.admin}  (an admin's token)\n"
                f"then: poold nodes | jobs | devices | token list\n"
                f"the dashboard: {pool.url}/#token={pool.tokens.admin}\nstop it with: kill {pids}; rm -rf {workdir}")
            keep_running = True
        if failed:
            sys.exit(1)
    finally:
        if not keep_running:
            if pool is not None:
                pool.stop()
            pool_demo.remove_workdir(workdir)


def _show(jobs: list[dict], refusal: str) -> None:
    rows = []
    for job in jobs:
        devices = devices_text(job) or "-"
        price = f"{job['price_per_hour']:.2f}" if job.get("price_per_hour") is not None else "-"
        rows.append([job["id"], job["name"], job["state"], job.get("node") or "-", devices, price])
    emit_table(["ID", "JOB", "STATE", "NODE", "DEVICES", "PRICE/H"], rows, title="where each job went")
    console.print("why there", style="bold")
    for job in jobs:
        console.print(f"  {job['id']} {job['name']}: {job.get('reason') or '-'}")
    console.print(Text.assemble(("what each job saw", "bold"), " (first line of its output)"))
    for job in jobs:
        first_line = (job.get("log") or "").strip().splitlines()[:1]
        console.print(f"  {job['id']} {job['name']}: {first_line[0] if first_line else '(no output)'}")
    console.print(Text.assemble(("refused at submit", "bold"), f" (8x A100 on a site with 4): {refusal}"))


COMMANDS = [demo]
