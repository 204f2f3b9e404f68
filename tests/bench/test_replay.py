"""The FGD-paper replay: protocol order, the independent ledger, the baselines on tiny clusters.

Arithmetic in comments; every cluster here is small enough to check by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.replay import (
    POLICIES,
    Assignment,
    BestFitPolicy,
    FgdPolicy,
    InvalidPlacement,
    Ledger,
    NodeSpec,
    RandomPolicy,
    Task,
    TraceError,
    arrival_order,
    load_tasks,
    register,
    run,
)
from bench.replay.fgd import typical_tasks

BASELINES = ("random", "dotprod", "bestfit", "fgd")
POLICY_NAMES = ("poold", *BASELINES)


def node(name: str, gpus: int = 1, cpu: int = 64_000, memory: int = 256_000, model: str = "T4") -> NodeSpec:
    return NodeSpec(name=name, cpu_milli=cpu, memory_mib=memory, gpus=gpus, model=model)


def task(name: str = "t", cpu: int = 1000, memory: int = 1000, gpus: int = 1, milli: int = 1000,
         models: frozenset[str] = frozenset()) -> Task:
    return Task(name=name, cpu_milli=cpu, memory_mib=memory, num_gpu=gpus, gpu_milli=milli if gpus else 0,
                models=models)


def started(policy, nodes, trace=(), seed=0):
    policy.start(list(nodes), list(trace) or [task()], seed)
    return policy


# --- protocol ---------------------------------------------------------------------------------

TRACE = [task(f"p{i:02d}", gpus=g, milli=m) for i, (g, m) in
         enumerate([(1, 500), (1, 1000), (2, 1000), (0, 0), (1, 250), (4, 1000), (1, 750), (0, 0)])]


def test_arrival_order_is_deterministic_per_seed_and_reaches_130_pct():
    # 4 GPUs -> 130 % is 5200 milli; the trace asks for 0.5+1+2+0.25+4+0.75 = 8.5 GPUs, already more,
    # so only the shuffle happens; with 8 GPUs (10400 milli) draws are appended.
    for gpus in (4, 8):
        first = arrival_order(TRACE, gpus, seed=7)
        assert first == arrival_order(TRACE, gpus, seed=7)
        assert sorted(t.name for t in first[:len(TRACE)]) == sorted(t.name for t in TRACE)
        total = sum(t.gpu_request_milli for t in first)
        assert total >= 1.3 * gpus * 1000
        if len(first) > len(TRACE):  # the last draw is the one that crosses the line
            assert total - first[-1].gpu_request_milli < 1.3 * gpus * 1000
            assert first[-1].name.endswith(f"-tuned-{len(first) - len(TRACE) - 1}")
    assert [t.name for t in arrival_order(TRACE, 8, seed=7)] != [t.name for t in arrival_order(TRACE, 8, seed=8)]


def test_run_records_the_curve_and_both_headline_points():
    nodes = [node("a", gpus=4), node("b", gpus=4)]
    result = run(BestFitPolicy(), nodes, TRACE, seed=3)
    assert result.decisions == len(result.curve) == result.placed + result.dropped
    assert result.curve[-1][0] >= 130
    assert result.at_100 is not None and result.at_130 is not None
    assert 0 <= result.at_130 <= 100


def test_arrival_order_refuses_a_trace_without_gpu_tasks():
    with pytest.raises(ValueError, match="no task asks for a GPU"):
        arrival_order([task(gpus=0)], 4, seed=1)


# --- the ledger -------------------------------------------------------------------------------

LEDGER_NODE = node("n0", gpus=2, cpu=8000, memory=1000, model="T4")


@pytest.mark.parametrize(("offered", "assignment", "reason"), [
    (task(cpu=9000, milli=500), Assignment(0, {0: 500}), "insufficient cpu: 8000 milli free, 9000 asked"),
    (task(memory=2000, milli=500), Assignment(0, {0: 500}), "insufficient memory: 1000 MiB free, 2000 asked"),
    # GPU 0 already holds 600 of 1000: 400 left, 500 asked
    (task(milli=500), Assignment(0, {0: 500}), "insufficient GPU 0: 400 milli free, 500 asked"),
    (task(milli=500, models=frozenset({"V100M32"})), Assignment(0, {1: 500}), "model T4 is not one of"),
    (task(gpus=2), Assignment(0, {1: 1000}), "takes 1 GPU(s), the task asks for 2"),
    (task(milli=500), Assignment(0, {0: 250, 1: 250}), "takes 2 GPU(s), the task asks for 1"),
    (task(gpus=0), Assignment(0, {1: 100}), "takes 1 GPU(s), the task asks for 0"),
    (task(milli=500), Assignment(0, {1: 400}), "takes 400 milli on GPU 1, the task asks for 500"),
    (task(milli=500), Assignment(0, {5: 500}), "GPU index 5 does not exist"),
    (task(milli=500), Assignment(3, {0: 500}), "node index 3 is not one of the 1 nodes"),
])
def test_ledger_refuses_an_overcommit_and_changes_nothing(offered, assignment, reason):
    ledger = Ledger([LEDGER_NODE])
    ledger.commit(task("first", cpu=0, memory=0, milli=600), Assignment(0, {0: 600}))
    before = (list(ledger.cpu_left), list(ledger.memory_left), [list(g) for g in ledger.gpu_left])
    with pytest.raises(InvalidPlacement, match=reason.replace("(", r"\(").replace(")", r"\)")):
        ledger.commit(offered, assignment)
    assert (ledger.cpu_left, ledger.memory_left, ledger.gpu_left) == before


def test_run_fails_loudly_when_a_policy_overcommits():
    class Greedy:
        name = "greedy"

        def start(self, nodes, trace, seed):
            pass

        def place(self, task):  # always GPU 0 of node 0, whatever is left
            return Assignment(0, {0: task.gpu_milli}) if task.num_gpu == 1 else None

    with pytest.raises(InvalidPlacement, match="insufficient GPU 0"):
        run(Greedy(), [node("a", gpus=1)], [task(milli=600)], seed=1)


# --- baselines --------------------------------------------------------------------------------

def test_bestfit_picks_the_tightest_node_and_gpu():
    # score = int(100 (1 - 0.5 (cpu_free - 4000) / 128000 - 0.5 (gpu_free - 500) / 8000)):
    #   small  (16000 cpu, 1 GPU):  1 - 0.046875 - 0.03125 = 0.921875 -> 92
    #   medium (32000 cpu, 2 GPUs): 1 - 0.109375 - 0.09375 = 0.796875 -> 79
    #   large  (96000 cpu, 8 GPUs): 1 - 0.359375 - 0.46875 = 0.171875 -> 17
    nodes = [node("large", gpus=8, cpu=96_000), node("medium", gpus=2, cpu=32_000), node("small", gpus=1, cpu=16_000)]
    policy = started(BestFitPolicy(), nodes)
    assert policy.place(task(cpu=4000, milli=500)) == Assignment(2, {0: 500})
    # small is now 500 milli free and 12000 cpu: a 300 share still fits there, on the same GPU
    assert policy.place(task(cpu=4000, milli=300)) == Assignment(2, {0: 300})
    # within medium, the tightest GPU: 600 then 300 go on GPU 0 (400 left beats 1000)
    assert policy.place(task(cpu=4000, milli=600)) == Assignment(1, {0: 600})
    assert policy.place(task(cpu=4000, milli=300)) == Assignment(1, {0: 300})


def test_fgd_avoids_stranding_gpu_that_bestfit_would_strand():
    # Typical task: 8000 cpu + 500 milli of one GPU (the only shape in the trace, frequency 1).
    # Place 4000 cpu + 500 milli on "tight" (10000 cpu, 1 GPU) or "roomy" (64000 cpu, 1 GPU).
    # BestFit: tight 1 - 0.5*6000/128000 - 0.5*500/8000 = 0.9453 -> 94; roomy 0.7344 -> 73: tight.
    # FGD: before, both nodes host the typical task: fragment 0.
    #   tight after: 6000 cpu < 8000, so its remaining 500 milli are stranded: F = 500,
    #     score int(100 sigmoid((0 - 500) / 1000)) = int(37.75) = 37
    #   roomy after: 60000 cpu, 500 milli left, the typical task still fits: F = 0, score 50: roomy.
    nodes = [node("tight", cpu=10_000), node("roomy", cpu=64_000)]
    trace = [task(f"typical-{i}", cpu=8000, milli=500) for i in range(4)]
    offered = task(cpu=4000, milli=500)
    assert started(BestFitPolicy(), nodes, trace).place(offered).node == 0
    fgd = started(FgdPolicy(), nodes, trace)
    assert fgd.scores(offered, fgd.arrays.feasible(offered).nonzero()[0]).tolist() == [37, 50]
    assert fgd.place(offered).node == 1


def test_fragment_of_a_node_follows_the_papers_definition():
    # Node: 5000 cpu left, GPUs with 300 and 1000 milli left (1300 in all). Typical tasks:
    #   4000 cpu + 500 milli, frequency 0.5: fits, only the 300 GPU is stranded -> 0.5 x 300  = 150
    #   8000 cpu + 1 GPU,     frequency 0.25: CPU too short, all 1300 count    -> 0.25 x 1300 = 325
    #   2000 cpu, no GPU,     frequency 0.25: a CPU task, all 1300 count        -> 0.25 x 1300 = 325
    # F = 800; on a model the first two may not use, all three count the whole 1300: F = 1300.
    from bench.replay.fgd import FragmentModel, TypicalTask

    typical = [TypicalTask(4000, 500, 1, frozenset({"T4"}), 0.5), TypicalTask(8000, 1000, 1, frozenset({"T4"}), 0.25),
               TypicalTask(2000, 0, 0, frozenset(), 0.25)]
    fragment = FragmentModel(typical, ["T4", "V100M32"])
    amounts = fragment.amount(np.array([5000, 5000]), np.array([[300, 1000], [300, 1000]]), np.array([0, 1]))
    assert amounts.tolist() == [800.0, 1300.0]


def test_typical_tasks_cover_the_popularity_threshold_and_renormalise():
    trace = [task(f"a{i}", milli=500) for i in range(6)] + [task(f"b{i}", milli=250) for i in range(3)] + [task("c")]
    # 95 % of 10 tasks is 9.5: 6 + 3 = 9 is not enough, all three shapes are typical
    assert [round(t.frequency, 3) for t in typical_tasks(trace)] == [0.6, 0.3, 0.1]
    # 90 % is 9: the two most frequent shapes, renormalised to 6/9 and 3/9
    assert [(t.gpu_milli, round(t.frequency, 3)) for t in typical_tasks(trace, 90)] == [(500, 0.667), (250, 0.333)]


def fits_somewhere(ledger: Ledger, offered: Task) -> bool:
    for index, spec in enumerate(ledger.nodes):
        free_gpus = [g for g, left in enumerate(ledger.gpu_left[index]) if left >= offered.gpu_milli]
        if len(free_gpus) >= offered.num_gpu:
            shares = {g: offered.gpu_milli for g in free_gpus[:offered.num_gpu]}
            if ledger.rejection(offered, Assignment(index, shares)) is None:
                return True
    return False


@pytest.mark.parametrize("seed", range(5))
def test_random_and_poold_place_only_where_the_task_fits_and_drop_only_what_fits_nowhere(seed):
    nodes = [node("a", gpus=2, cpu=8000, memory=4000), node("b", gpus=4, cpu=16_000, memory=8000),
             node("c", gpus=1, cpu=4000, memory=2000)]
    shapes = [(0, 0, 2000), (1, 300, 1000), (1, 700, 1500), (1, 1000, 3000), (2, 1000, 500), (4, 1000, 1000)]
    tasks = [task(f"t{i}", cpu=1000 + 500 * (i % 5), memory=mem, gpus=g, milli=m)
             for i, (g, m, mem) in enumerate(shapes * 6)]
    policy = started(RandomPolicy() if seed % 2 else POLICIES["poold"](), nodes, tasks, seed)
    ledger = Ledger(nodes)
    placed = 0
    for offered in tasks:
        assignment = policy.place(offered)
        if assignment is None:
            assert not fits_somewhere(ledger, offered)
        else:
            ledger.commit(offered, assignment)  # raises on any over-commit
            placed += 1
    assert placed > 0


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_a_model_constrained_task_never_lands_on_another_model(name):
    nodes = [node("t4-0", gpus=4, model="T4"), node("v100", gpus=2, model="V100M32"), node("t4-1", gpus=4, model="T4")]
    v100_only = frozenset({"V100M32"})
    tasks = [task(f"t{i}", milli=(400, 1000)[i % 2], models=v100_only) for i in range(8)]
    policy = started(POLICIES[name](), nodes, tasks + [task("any", milli=500)], seed=1)
    outcomes = [policy.place(t) for t in tasks]
    assert {a.node for a in outcomes if a is not None} == {1}
    # the V100 node takes 400 + 1000 + 400 (200 milli left), then nothing more: the rest are dropped
    assert [a is not None for a in outcomes] == [True, True, True, False, False, False, False, False]


def test_the_registry_holds_the_baselines_and_stays_open():
    assert set(POLICY_NAMES) <= set(POLICIES)
    assert {POLICIES[name]().name for name in POLICY_NAMES} == set(POLICY_NAMES)
    with pytest.raises(ValueError, match="already registered"):
        register("fgd", FgdPolicy)
    register("test-bestfit", BestFitPolicy)
    try:
        assert POLICIES["test-bestfit"] is BestFitPolicy
    finally:
        del POLICIES["test-bestfit"]


# --- files and the command line ---------------------------------------------------------------

POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"


def test_a_bad_row_names_file_line_and_column(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text(POD_HEADER + "p0,1000,100,1,500,,LS,Running,0,1,0\np1,lots,100,1,500,,LS,Running,0,1,0\n")
    with pytest.raises(TraceError, match=rf"{path}:3: column 'cpu_milli': expected a whole number, got 'lots'"):
        load_tasks(path)
    path.write_text(POD_HEADER + "p0,1000,100,2,500,,LS,Running,0,1,0\n")
    with pytest.raises(TraceError, match=r":2: column 'gpu_milli': a 2-GPU task must take whole GPUs"):
        load_tasks(path)
    path.write_text("name,cpu_milli\np0,1\n")
    with pytest.raises(TraceError, match=r":1: missing column\(s\) memory_mib, num_gpu, gpu_milli, gpu_spec"):
        load_tasks(path)


def test_the_spec_names_each_model_once(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text(POD_HEADER + "p0,1000,100,1,500,V100M16|V100M32|V100M32,LS,Running,0,1,0\n")
    assert load_tasks(path)[0].models == frozenset({"V100M16", "V100M32"})


def test_replay_command_prints_a_table_and_json_last(tmp_path, capsys):
    from bench.placement import main

    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,32000,65536,2,T4\nn1,64000,131072,4,V100M32\n")
    pods = tmp_path / "pods.csv"
    rows = [f"p{i},{2000 + 1000 * (i % 3)},4096,{(0, 1, 1, 2)[i % 4]},{(0, 500, 1000, 1000)[i % 4]},,LS,Running,0,1,0"
            for i in range(12)]
    pods.write_text(POD_HEADER + "\n".join(rows) + "\n")
    assert main(["replay", str(pods), "--nodes", str(nodes), "--seeds", "1-2", "--policy", "bestfit",
                 "--policy", "fgd", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    record = json.loads(lines[-1])
    assert record["trace"] == "pods.csv" and record["gpus"] == 6
    assert [r["policy"] for r in record["results"]] == ["bestfit", "fgd"]
    assert [s["seed"] for s in record["results"][0]["per_seed"]] == [1, 2]
    assert any(line.startswith("fgd ") for line in lines[:-1])
