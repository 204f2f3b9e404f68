"""The simulator of time (``bench/placement.py simulate``) on a tiny synthetic trace: the JSON's
shape, and what must hold whatever the policy: nothing over capacity, every task placed in the
end, no task started after the reservation it held."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from bench.placement import main
from bench.sharing import Simulation, compress, load_queues, load_timed_tasks
from bench.sharing.workload import SimQueue, queue_of
from bench.replay import TraceError, load_nodes
from poold.scheduler.sharing import QueueEntitlement

HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"


def write_trace(tmp_path, rows):
    path = tmp_path / "pods.csv"
    path.write_text(HEADER + "".join(
        f"p{i:03d},{cpu},1024,{gpus},{milli},,{qos},Running,{start},{start + duration},{start}\n"
        for i, (cpu, gpus, milli, qos, start, duration) in enumerate(rows)))
    return path


def write_nodes(tmp_path):
    path = tmp_path / "nodes.csv"
    path.write_text("sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"n{i},32000,262144,4,{model}\n" for i, model in enumerate(["T4", "V100M16", "T4"])))
    return path


def busy_rows(count=60, ls_every=5):
    # Every 30 s a task: mostly 1 GPU (some shares), every 7th takes 4; 600-3000 s each. Arrivals
    # ask for far more than 12 GPUs hold, so queues stay busy.
    rows = []
    for i in range(count):
        gpus, milli = (4, 1000) if i % 7 == 3 else (1, 500 if i % 3 == 0 else 1000)
        rows.append((2000, gpus, milli, "LS" if ls_every and i % ls_every == 0 else "BE", 30 * i, 600 + (i * 337) % 2400))
    return rows


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("simulate")
    trace, nodes = write_trace(tmp_path, busy_rows()), write_nodes(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["simulate", str(trace), "--nodes", str(nodes), "--gpus", "12", "--limit", "60", "--json"])
    return code, out.getvalue()


def test_json_shape_poold_first(simulated):
    code, out = simulated
    assert code == 0
    record = json.loads(out.strip().splitlines()[-1])
    assert [p["policy"] for p in record["policies"]] == ["poold", "no-backfill", "priority"]
    for policy in record["policies"]:
        assert {"utilisation", "max_share_error", "wait_p95_s", "longest_wait_s", "preemptions"} <= set(policy)
        assert 0 < policy["utilisation"] <= 1
        assert policy["max_share_error"] >= 0
        assert set(policy["wait_p95_s"]) <= {"1", "4"} and "1" in policy["wait_p95_s"]
        assert policy["longest_wait_s"] >= max(policy["wait_p95_s"].values())


def test_invariants_hold_for_every_policy(simulated):
    _, out = simulated
    for policy in json.loads(out.strip().splitlines()[-1])["policies"]:
        assert policy["over_capacity"] == 0, policy
        assert policy["never_placed"] == 0, policy
        assert policy["late_heads"] == 0, policy
    assert json.loads(out.strip().splitlines()[-1])["policies"][2]["preemptions"] == 0  # plain priority never preempts


def test_the_table_names_every_queue(simulated):
    _, out = simulated
    for name in ("prod", "research", "batch"):
        assert f"queue {name}:" in out


def test_one_queue_of_equal_priorities_gets_everything_and_preempts_nothing(tmp_path):
    # One queue: entitled to all of the cost held, and it gets all of it; all tasks BE (priority
    # 0): no one may take from anyone.
    trace, nodes = write_trace(tmp_path, busy_rows(20, ls_every=0)), write_nodes(tmp_path)
    tasks, _ = compress(load_timed_tasks(trace, 20, 3600.0), 12, 1.3)
    result = Simulation("poold", load_nodes(nodes), tasks, [SimQueue(QueueEntitlement("only"), 1.0)]).run()
    assert result.shares == {"only": (pytest.approx(1.0), pytest.approx(1.0))}
    assert (result.preemptions, result.never_placed, result.over_capacity) == (0, 0, 0)


def test_compress_divides_gaps_to_reach_the_load(tmp_path):
    # Two 1-GPU tasks of 100 s, 1000 s apart: 200 GPU-seconds asked. On 1 GPU at load 2 the span
    # must be 200 / (2 x 1) = 100 s: gaps divided by 10.
    trace = write_trace(tmp_path, [(0, 1, 1000, "LS", 0, 100), (0, 1, 1000, "LS", 1000, 100)])
    tasks, factor = compress(load_timed_tasks(trace, 10, 3600.0), 1, 2.0)
    assert factor == pytest.approx(10.0)
    assert [t.arrival_s for t in tasks] == [0.0, pytest.approx(100.0)]
    # max_runtime: 1.5 x 100 s = 150 s, rounded up to the minute: 180 s
    assert tasks[0].max_runtime_s == 180.0


def test_queues_file_and_split(tmp_path):
    path = tmp_path / "queues.toml"
    path.write_text('[queues.a]\nweight = 3\nguarantee = {H100 = 2, cost = 4.0}\nshare = 3\n[queues.b]\nshare = 1\n')
    queues = load_queues(path)
    assert [(q.entitlement.name, q.entitlement.weight, q.share) for q in queues] == [("a", 3.0, 3.0), ("b", 1.0, 1.0)]
    assert queues[0].entitlement.guarantee == {"h100": 2.0, "cost": 4.0}
    names = [queue_of(f"pod-{i}", queues) for i in range(2000)]
    assert 0.70 < names.count("a") / len(names) < 0.80  # share 3 of 4
    path.write_text("[queues.a]\nwieght = 3\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_queues(path)


def test_a_trace_without_times_is_refused(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np1,1000,1000,1,1000,\n")
    with pytest.raises(TraceError, match="creation_time"):
        load_timed_tasks(path, 10, 3600.0)


def test_a_queue_under_its_guarantee_gets_it_back_within_one_pass_and_the_grace(tmp_path):
    # 3 nodes x 4 T4 at 0.35/h = 4.2/h. Queue b fills all 12 T4 at t = 0 with tasks of 5000 s;
    # at t = 600, 10 tasks of queue a arrive, guaranteed 2.1/h = 6 T4. The pass at 600 preempts 6
    # of b's (a is under its guarantee, b has none); they stop after the 30 s grace and the pass
    # at 630 places 6 of a's: a was under its guarantee for 30 s.
    queues = [SimQueue(QueueEntitlement("a", guarantee={"cost": 2.1}), 1.0), SimQueue(QueueEntitlement("b"), 1.0)]
    names = {"a": [], "b": []}
    serial = 0
    while len(names["a"]) < 10 or len(names["b"]) < 12:
        name = f"pod-{serial}"
        serial += 1
        queue = queue_of(name, queues)
        if len(names[queue]) < (10 if queue == "a" else 12):
            names[queue].append(name)
    rows = [(name, 0) for name in names["b"]] + [(name, 600) for name in names["a"]]
    trace = tmp_path / "burst.csv"
    trace.write_text(HEADER + "".join(f"{name},1000,1024,1,1000,,BE,Running,{start},{start + 5000},{start}\n" for name, start in rows))
    nodes = tmp_path / "t4.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\n" + "".join(f"n{i},32000,262144,4,T4\n" for i in range(3)))
    result = Simulation("poold", load_nodes(nodes), load_timed_tasks(trace, 100, 10_000.0), queues, pass_s=10.0, grace_s=30.0).run()
    assert result.preemptions == 6
    assert 0 < result.guarantee_recovery_max_s <= 10.0 + 30.0
    assert (result.over_capacity, result.never_placed) == (0, 0)
