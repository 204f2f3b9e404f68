"""The job mix learned online: which shapes it publishes, with what probabilities, and when it
publishes anew. Arithmetic in comments."""

from __future__ import annotations

import pytest

from poold.scheduler.mix import JobMix
from poold.scheduler.request import PlacementRequest
from tests.builders import job


def shape(**resources) -> PlacementRequest:
    return PlacementRequest.from_spec(1, job(**resources))


def seen(mix: JobMix, *batches: tuple[dict, int]) -> JobMix:
    for resources, n in batches:
        for _ in range(n):
            mix.observe(shape(**resources))
    return mix


def published(mix: JobMix) -> dict[tuple, float]:
    return {(t.request.count, t.request.share): t.probability for t in mix.types()}


def test_the_most_frequent_shapes_covering_the_coverage():
    # 60 + 30 + 6 + 4 = 100 jobs; coverage 0.95: 0.60, 0.90, then 0.96 >= 0.95, so the 4 jobs
    # of 2 GPUs are left out and the rest renormalised over 96: 60/96, 30/96, 6/96.
    mix = seen(JobMix(half_life_jobs=1e9, refresh_every=1, drift=0.0),
               ({}, 60), ({"share": 0.5}, 30), ({"share": 0.25}, 6), ({"count": 2}, 4))
    assert published(mix) == pytest.approx({(1, 1.0): 0.625, (1, 0.5): 0.3125, (1, 0.25): 0.0625})


def test_shapes_are_kept_by_job_count_so_small_shares_stay_in_view():
    # 90 halves, 6 shares of 0.16, 4 jobs of 8 GPUs. By count: 0.90, then 0.96 >= 0.95 with the
    # 0.16 shares (they fill the gaps others leave); by device capacity the 8-GPU jobs (32 GPUs
    # against 0.96) would have taken their place.
    mix = seen(JobMix(half_life_jobs=1e9, refresh_every=1, drift=0.0), ({"share": 0.5}, 90), ({"share": 0.16}, 6), ({"count": 8}, 4))
    assert set(published(mix)) == {(1, 0.5), (1, 0.16)}


def test_cpu_only_jobs_stay_out_of_the_mix():
    mix = seen(JobMix(refresh_every=1), ({"kind": "cpu", "count": 0, "cpu_cores": 8}, 5), ({}, 1))
    assert published(mix) == {(1, 1.0): 1.0}


def test_a_job_seen_one_half_life_ago_counts_half():
    # half_life_jobs 10: the 10 whole-GPU jobs weigh 2^(0/10) .. 2^(9/10), the 10 halves after
    # them 2^(10/10) .. 2^(19/10), twice as much: p = 1/3 and 2/3.
    mix = seen(JobMix(half_life_jobs=10, refresh_every=1, drift=0.0), ({}, 10), ({"share": 0.5}, 10))
    assert published(mix) == pytest.approx({(1, 1.0): 1 / 3, (1, 0.5): 2 / 3})


def test_the_mix_is_published_anew_only_when_it_drifts():
    # Reconsidered after every job (refresh_every 1); replaced when the probabilities move by
    # 0.05 or more in total variation.
    mix = seen(JobMix(half_life_jobs=1e9, refresh_every=1, drift=0.05), ({}, 20))
    assert mix.version == 1 and published(mix) == {(1, 1.0): 1.0}
    # 1 half: whole 20/21 = 0.952 covers 0.95 alone, nothing moves. 2 halves: whole 20/22 =
    # 0.909, the half joins at 2/22 = 0.091: moved 0.091 >= 0.05, published anew.
    seen(mix, ({"share": 0.5}, 2))
    assert mix.version == 2
    assert published(mix) == pytest.approx({(1, 1.0): 20 / 22, (1, 0.5): 2 / 22})
    # 3 halves: 3/23 = 0.130 against 0.091 moves 0.040 < 0.05: kept.
    seen(mix, ({"share": 0.5}, 1))
    assert mix.version == 2
    # 4 halves: 4/24 = 0.167 moves 0.076: published anew.
    seen(mix, ({"share": 0.5}, 1))
    assert mix.version == 3
