"""What each part of a gang sees: the distributed-training variables, consistent across parts."""

from __future__ import annotations

import pytest

from agents.job_env import job_env
from poold_wire.messages import Assignment, GangInfo


def part(rank: int, env: dict[str, str] | None = None, sizes: tuple[int, ...] = (8, 8)) -> dict[str, str]:
    gang = GangInfo(job_id=41, rank=rank, nodes=["hgx-01", "hgx-02", "hgx-03"][: len(sizes)], devices_per_node=list(sizes), master_port=29541)
    assignment = Assignment(job_id=100 + rank, name="train", command=["torchrun", "train.py"], env=env or {}, gang=gang)
    return job_env(assignment, f"node-{rank}", {})


@pytest.mark.parametrize(
    ("rank", "sizes", "expected"),
    [
        # Two parts of 8: WORLD_SIZE = 8 + 8 = 16; rank 1's first process is global rank 8.
        (0, (8, 8), {"WORLD_SIZE": "16", "RANK": "0", "NODE_RANK": "0", "LOCAL_WORLD_SIZE": "8", "NNODES": "2"}),
        (1, (8, 8), {"WORLD_SIZE": "16", "RANK": "8", "NODE_RANK": "1", "LOCAL_WORLD_SIZE": "8", "NNODES": "2"}),
        # Three parts of 4: WORLD_SIZE = 12; rank 2 starts at 4 + 4 = 8.
        (2, (4, 4, 4), {"WORLD_SIZE": "12", "RANK": "8", "NODE_RANK": "2", "LOCAL_WORLD_SIZE": "4", "NNODES": "3"}),
    ],
)
def test_rank_variables(rank, sizes, expected):
    env = part(rank, sizes=sizes)
    assert {key: env[key] for key in expected} == expected
    assert (env["LOCAL_RANK"], env["GROUP_RANK"], env["MASTER_ADDR"], env["MASTER_PORT"]) == ("0", str(rank), "hgx-01", "29541")
    assert env["POOLD_NODES"] == ",".join(["hgx-01", "hgx-02", "hgx-03"][: len(sizes)]) and env["POOLD_GANG_ID"] == "41"
    # torchrun reads its flags' defaults from PET_*: a plain `torchrun train.py` joins the gang.
    assert (env["PET_NNODES"], env["PET_NODE_RANK"], env["PET_NPROC_PER_NODE"]) == (str(len(sizes)), str(rank), str(sizes[rank]))
    assert (env["PET_MASTER_ADDR"], env["PET_MASTER_PORT"]) == ("hgx-01", "29541")
    assert env["POOLD_JOB_ID"] == str(100 + rank)  # the part's own id (its log, its events)


def test_the_jobs_own_master_port_wins_and_is_the_same_everywhere():
    assert {part(rank, {"MASTER_PORT": "31000"})["MASTER_PORT"] for rank in (0, 1)} == {"31000"}
    assert part(1, {"MASTER_PORT": "31000"})["PET_MASTER_PORT"] == "31000"


def test_a_job_of_one_node_gets_none_of_them():
    env = job_env(Assignment(job_id=7, name="one", command=["true"]), "n", {})
    assert not {"WORLD_SIZE", "RANK", "MASTER_ADDR", "NODE_RANK", "POOLD_NODES"} & set(env)
