"""`GET /nodes` counts whole devices and MIG slices apart (the 8-GPU node with MIG once showed "11")."""

from __future__ import annotations

from tests.api.calls import register, submit
from tests.builders import make_node


def counts(api, name):
    node = next(n for n in api.get("/api/v1/nodes").json() if n["name"] == name)
    return node["devices_free"], node["devices"], node["slices_free"], node["slices"]


def test_whole_devices_and_mig_slices_are_counted_apart(api):
    register(api, make_node("hgx").gpus(8, "H100", nvlink=18).mig(0, ["3g.40gb", "2g.20gb", "2g.20gb"]))
    register(api, make_node("l4").gpus(2, "L4"))
    # 8 GPUs (GPU 0 in MIG mode is one of them), its 3 slices apart; nothing held yet
    assert counts(api, "hgx") == (8, 8, 3, 3)
    assert counts(api, "l4") == (2, 2, 0, 0)
    submit(api, mig_profile="2g.20gb")
    # a slice held: 2 of 3 slices free, and GPU 0 (its parent) is no longer a free whole device
    assert counts(api, "hgx") == (7, 8, 2, 3)
    submit(api, count=2, accept=[{"model": "H100"}])
    assert counts(api, "hgx") == (5, 8, 2, 3)
    drained = api.post("/api/v1/nodes/hgx/drain", json={"reason": "firmware"}).json()
    assert (drained["devices_free"], drained["devices"], drained["slices_free"], drained["slices"]) == (5, 8, 2, 3)
