"""`poold submit --wait` on a live demo pool: the placement once, the job's output as it comes,
the outcome in one line; for a failure its cause and its exit code; a pending reason again only
when its kind changes."""

from __future__ import annotations

import subprocess
import sys
import time

from poold.jobspec import parse_job_text
from poold.scheduler.reasons import reason_kind
from tests.cli.demo_pool import SLEEPER, poold, write
from tests.live import wait_for

COUNTER = 'name = "counter"\ncommand = "sh -c \'for i in 1 2 3; do echo line $i; sleep 0.5; done\'"\n[resources]\nkind = "gpu"\n' \
          '[[resources.accept]]\nmodel = "L4"\n'
BROKEN = 'name = "broken"\ncommand = "sh -c \'echo about to fail; echo oops >&2; exit 7\'"\n[resources]\nkind = "gpu"\n' \
         '[[resources.accept]]\nmodel = "L4"\n'


def test_wait_streams_the_log_and_states_the_placement_once(env, tmp_path):
    result = poold(env, "submit", "--wait", "--poll", "0.1", write(tmp_path, COUNTER))
    job_id, *output = result.stdout.splitlines()
    assert output == ["line 1", "line 2", "line 3"]
    status = result.stderr.splitlines()
    placed = [line for line in status if " placed on " in line]
    assert len(placed) == 1 and placed[0].startswith(f"job {job_id} placed on l4: 1x L4 (") and placed[0].endswith("at 0.80/h")
    assert "cheapest per unit of work" not in result.stderr  # the long placement sentence is `poold job`'s
    assert status[-1].startswith(f"job {job_id} succeeded after ")


def test_wait_on_a_failure_prints_the_cause_and_exits_with_the_job_code(env, tmp_path):
    result = poold(env, "submit", "--wait", "--poll", "0.1", write(tmp_path, BROKEN), check=7)
    job_id = result.stdout.splitlines()[0]
    assert "about to fail" in result.stdout and "oops" in result.stdout  # the job's stdout and stderr, as its log has them
    status = result.stderr.splitlines()
    end = next(i for i, line in enumerate(status) if line.startswith(f"job {job_id} failed (exit 7)"))
    assert status[end + 1].startswith("cause: failed (exit 7)")
    assert any("job.started" in line for line in status[end + 2:]) and any("job.failed" in line for line in status[end + 2:])
    assert "cheapest per unit of work" not in result.stderr


def test_wait_says_why_it_waits_once_per_kind(env, demo_pool, tmp_path):
    """One A100 of four held: a job asking all four waits, short of devices, while short jobs
    come and go on the other three and the count of free ones in its reason changes; it runs
    once the hog ends."""
    client = demo_pool.client(demo_pool.tokens.admin)
    hog = client.submit(parse_job_text(SLEEPER.replace("L4", "A100"), "hog.toml").model_dump(mode="json"))["id"]
    wait_for(lambda: client.job(hog)["state"] == "running", timeout_s=30)
    big = COUNTER.replace('model = "L4"', 'model = "A100"').replace('kind = "gpu"', 'kind = "gpu"\ncount = 4')
    process = subprocess.Popen([sys.executable, "-m", "poold", "submit", "--wait", "--poll", "0.1", write(tmp_path, big)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        job_id = int(process.stdout.readline())
        reasons = {wait_for(lambda: client.job(job_id)["reason"], timeout_s=20)}
        for seconds in (2, 4, 6):  # three A100s taken at once, given back one at a time
            short = SLEEPER.replace("L4", "A100").replace("sleep 120", f"sleep {seconds}")
            client.submit(parse_job_text(short, "short.toml").model_dump(mode="json"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reasons.add(client.job(job_id)["reason"])
            time.sleep(0.1)
        client.cancel(hog)
        out, err = process.communicate(timeout=60)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    said = [line.split(": ", 1)[1] for line in err.splitlines() if line.startswith(f"job {job_id} pending: ")]
    kinds = [reason_kind(reason) for reason in said]
    assert all(one != next_ for one, next_ in zip(kinds, kinds[1:])), err  # each line a new kind
    short_of = {reason for reason in reasons if "too_few_devices" in reason}
    assert len(short_of) >= 3, reasons  # "3 suitable A100 free on a100", then 1, then 2: ...
    assert len([reason for reason in said if "too_few_devices" in reason]) == 1, err  # ... said once
    assert out.splitlines() == ["line 1", "line 2", "line 3"]
