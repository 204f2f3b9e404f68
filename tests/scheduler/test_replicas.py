"""Two daemons on one store place shared-GPU jobs at once, while jobs end and new ones arrive:
in SQL, no device and no node is ever held beyond what it has, on any resource.

Each daemon is its own Scheduler with its own database engine (connections, pool, caches),
as two processes would be. The jobs are built so that device share is rarely what binds:
two 12 GiB halves do not fit a 22.5 GiB L4, and two 30-core jobs do not fit a 48-core node,
so a commit that re-checked only the share would over-commit memory and CPU.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timezone

from poold.db.models import JobModel
from poold.db.session import make_engine, make_sessionmaker, transaction
from poold.scheduler.loop import Scheduler
from poold.services import audit, jobs
from poold_wire.messages import JobEvent
from tests.builders import job, make_node

SHAPES = [
    {"share": 0.5, "memory_per_device": "12GiB", "cpu_cores": 10, "host_memory": "8GiB"},
    {"share": 0.25, "memory_per_device": "6GiB", "cpu_cores": 30, "host_memory": "16GiB"},
    {"share": 0.5, "memory_per_device": "8GiB", "cpu_cores": 20, "host_memory": "40GiB"},
    {"count": 1, "cpu_cores": 4, "host_memory": "4GiB"},
    {"kind": "cpu", "cpu_cores": 25, "host_memory": "20GiB"},
]


def _submit(factory, rng, count):
    with transaction(factory) as session:
        for _ in range(count):
            jobs.submit(session, job(**rng.choice(SHAPES)))


def _end_some(factory, rng):
    """Play the agents: end a few placed jobs, as their nodes would report."""
    with factory() as session:
        placed = session.query(JobModel.id, JobModel.node_id).filter(JobModel.state == "assigned").all()
        names = {node.id: node.name for node in session.query(jobs.NodeModel)}
    for job_id, node_id in rng.sample(placed, min(3, len(placed))):
        with transaction(factory) as session:
            now = datetime.now(timezone.utc)
            jobs.apply_event(session, names[node_id], JobEvent(job_id=job_id, kind="ended", at=now, exit_code=0))


def test_two_daemons_never_over_commit_device_memory_cpu_or_host_memory(pool, settings):
    with transaction(pool.factory) as session:
        for i in range(4):
            make_node(f"l4-{i}", cpu_cores=48, memory_mib=64 * 1024).gpus(2, "L4").register(session)
    rng = random.Random(7)
    _submit(pool.factory, rng, 40)
    errors: list[BaseException] = []
    violations: list[str] = []
    stop = threading.Event()
    barrier = threading.Barrier(3)

    def daemon(seed: int) -> None:
        engine = make_engine(pool.url)  # its own connections, as another process would have
        try:
            scheduler = Scheduler(make_sessionmaker(engine), settings, seed=seed)
            barrier.wait()
            while not stop.is_set():
                scheduler.run_pass()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
            stop.set()
        finally:
            engine.dispose()

    threads = [threading.Thread(target=daemon, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    barrier.wait()
    try:
        for _ in range(25):
            time.sleep(0.05)
            _end_some(pool.factory, rng)
            _submit(pool.factory, rng, 3)
            with pool.factory() as session:
                violations.extend(audit.over_capacity(session))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    with pool.factory() as session:
        violations.extend(audit.over_capacity(session))
        placed = session.query(JobModel).filter(JobModel.state.in_(("assigned", "succeeded"))).count()
    assert violations == []
    assert placed >= 20  # the daemons did place work; the race was real
