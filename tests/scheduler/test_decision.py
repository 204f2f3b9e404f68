"""A placement's score breakdown (what a pass records in ``job.placed`` and ``poold why``
shows): the chosen beside the runner-up, each scorer's 0..100 exactly as ``poold plan`` scores
them, even where the runner-up borrows the chosen's score of a scorer that rated all alike."""

from __future__ import annotations

import json

from poold.scheduler.engine import Engine, Placement
from poold.scheduler.framework import EngineOptions
from poold.scheduler.request import PlacementRequest
from poold.scheduler.stack import build_stack
from tests.builders import make_node, make_pool


def test_the_breakdown_holds_the_chosen_and_runner_up_as_plan_scores_them(settings):
    pool = make_pool(settings, make_node("l4").gpus(2, "L4"), make_node("a100").gpus(2, "A100"))
    engine = Engine(pool, build_stack(), EngineOptions(seed=0))
    request = PlacementRequest(job_id=1, count=1, kinds=frozenset({"gpu"}), accept=(("l4", 1.0), ("a100", 2.0)))
    placement = engine.place(request)
    assert isinstance(placement, Placement) and placement.runner_up is not None
    lazy = [name for name, part in placement.runner_up.parts.items() if isinstance(part, tuple)]
    assert lazy  # scorers that rated both alike: the runner-up takes the chosen's score of them
    record = json.loads(json.dumps(placement.breakdown()))  # plain JSON, as the event stores it
    chosen, [runner_up] = record["chosen"], record["runners_up"]
    # L4: 0.80/h at speed 1 = 0.80 per unit of work; A100: 2.20/h at speed 2 = 1.10.
    assert (chosen["node"], chosen["model"], chosen["cost_per_work"]) == ("l4", "L4", 0.8)
    assert (runner_up["node"], runner_up["model"], runner_up["cost_per_work"]) == ("a100", "A100", 1.1)
    assert chosen["scores"] == {**placement.chosen.scores, "total": placement.chosen.total}
    assert runner_up["scores"] == {**placement.runner_up.scores, "total": placement.runner_up.total}
    assert list(chosen["scores"])[:-1] == [scorer.name for scorer in engine.stack.scorers]
    assert record == {"chosen": placement.summary(placement.chosen), "runners_up": [placement.summary(placement.runner_up)]}
