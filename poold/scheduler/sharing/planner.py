"""One pass of the sharing policy: which waiting jobs are placed, which running jobs are
preempted for whom, which devices are reserved for whom, and why the others wait.

Pure: it reads the engine's pool and asks the engine, and leaves the pool as it found it. The
order of a pass (see ``entitlements.queue_order_key``): queues under their guarantee first,
furthest under first; then queue priority; then weighted fair share over cost, the lowest
usage per weight first, usage updated as the pass places jobs. Within a queue, job priority,
then age. For each job in that order:

1. its request narrowed to the accept entries open after its wait (``after``);
2. a job whose preempted victims are still stopping waits for them, its devices reserved;
3. placed where it uses no reserved device, unless that would take its queue over a limit;
4. else, if it ends (now + max_runtime) before some reservations start, placed where only
   those are given up (EASY backfill); a job without max_runtime never is;
5. else preemption: lower-priority jobs of its queue, or, when its queue is under its
   guarantee, jobs of queues above theirs (``preempt.cheapest_victims``); the devices freed
   are reserved for it from now + the grace period;
6. else the first such job of its queue (its head) gets a reservation: the earliest time its
   placement fits as running jobs end (``reserve.earliest_start``).

Reservations are kept from one pass to the next (until the pool's layout changes) and held
before anything is placed, so a head's devices stay its own whichever queue goes first.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence

from poold.scheduler.engine import Engine, Placement, Unplaceable
from poold.scheduler.request import PlacementRequest
from poold.scheduler.sharing.entitlements import (
    EPSILON, Amounts, add, entitled_costs, guarantee_cost, held_amounts, over_limit, price_per_key, queue_order_key,
    under_guarantee_keys, widest_gap, within_guarantee,
)
from poold.scheduler.sharing.model import (
    COST, Holder, PassPlan, Preemption, QueueEntitlement, Reservation, SharingOptions, Waiting,
)
from poold.scheduler.sharing.preempt import Candidate, cheapest_victims
from poold.scheduler.sharing.reserve import Phantoms, earliest_start, place_without

PLACED, SKIPPED, WAITS = "placed", "skipped", "waits"
# Passes after which the planner adds up what each queue holds from scratch (``held_by_queue``).
RECOUNT_PASSES = 500


class Planner:
    """The sharing policy over ``engine``; lives as long as the daemon (it keeps the last
    pass's reservations). ``queues`` by name; a job of a queue not named there gets weight 1
    and no guarantee or limit."""

    def __init__(self, engine: Engine, queues: dict[str, QueueEntitlement], options: SharingOptions | None = None):
        self.engine = engine
        self.queues = dict(queues)
        self.options = options or SharingOptions()
        self._carried: dict[int, Reservation] = {}
        self._layout = engine.pool.layout
        # Requests that found no placement, with the pool's ``gains`` when the pass that found
        # it ended: they fail again at once, without a question to the engine, until the pool
        # gives capacity back (a release, a node back, a device healthy again).
        self._failures: tuple[int, dict[tuple, Unplaceable]] = (-1, {})
        self._amounts: dict[int, tuple[tuple, float, Amounts]] = {}
        self._prices: tuple[int, dict[str, float]] | None = None
        # What the holders not stopping hold, per queue, and what each was counted with
        # (``held_by_queue``); ``_tallies`` counts how often they were brought up to date.
        self._held: dict[str, Amounts] = {}
        self._counted: dict[int, tuple[str, Amounts]] = {}
        self._tallies = 0

    def guaranteed_cost(self, name: str) -> float:
        """A queue's guarantee in money per hour (devices priced at the pool's mean per model or kind)."""
        if self._prices is None or self._prices[0] != self.engine.pool.layout:
            self._prices = (self.engine.pool.layout, price_per_key(self.engine.pool))
        return guarantee_cost(self.entitlement(name), self._prices[1])

    def amounts_of(self, holder: Holder) -> Amounts:
        """What ``holder`` counts for (``held_amounts``), worked out once while its holdings in
        the pool stay the same objects: a pool running tens of thousands of jobs does not count
        every device of every job again at every pass."""
        holdings = self.engine.pool.holdings.get(holder.job_id, ())
        known = self._amounts.get(holder.job_id)
        if known is not None and known[0] is holdings and known[1] == holder.price_per_hour:
            return known[2]
        amounts = held_amounts(self.engine.pool, holdings, holder.price_per_hour)
        self._amounts[holder.job_id] = (holdings, holder.price_per_hour, amounts)
        return amounts

    def held_by_queue(self, holders: Sequence[Holder]) -> tuple[dict[int, Amounts], dict[str, Amounts]]:
        """What each holder counts for (``amounts_of``), and what the holders not stopping hold
        per queue (new dicts, the caller's to change).

        The sums per queue are kept from pass to pass and brought up to date with the holders
        that came, went, stopped or changed since: a pass over a pool running tens of thousands
        of jobs does not add them all up again. They are added up from scratch every
        ``RECOUNT_PASSES`` passes, so rounding cannot drift."""
        self._tallies += 1
        if self._tallies % RECOUNT_PASSES == 0:
            self._held, self._counted = {}, {}
        held, before = self._held, self._counted
        parts: dict[int, Amounts] = {}
        counted: dict[int, tuple[str, Amounts]] = {}
        for h in holders:
            amounts = parts[h.job_id] = self.amounts_of(h)
            if h.stopping:
                continue
            counted[h.job_id] = (h.queue, amounts)
            known = before.pop(h.job_id, None)
            if known is None or known[1] is not amounts or known[0] != h.queue:
                if known is not None:
                    add(held[known[0]], known[1], -1.0)
                add(held.setdefault(h.queue, {}), amounts)
        for queue, amounts in before.values():  # gone, or stopping now
            add(held[queue], amounts, -1.0)
        self._counted = counted
        return parts, {name: dict(total) for name, total in held.items()}

    def entitlement(self, name: str) -> QueueEntitlement:
        found = self.queues.get(name)
        return found if found is not None else QueueEntitlement(name)

    def plan(self, now_s: float, waiting: Sequence[Waiting], holders: Sequence[Holder], keep: bool = False) -> PassPlan:
        """Decide one pass at ``now_s``; see the module docstring. The pool is left unchanged:
        apply ``plan.placements`` in order, ask ``plan.preemptions`` victims to stop. With
        ``keep``, the placements stay held in the pool instead (the caller commits them, and
        releases the ones it does not); when planning fails, nothing is held either way."""
        if self._layout != self.engine.pool.layout:
            self._carried = {}  # device slots were renumbered
        known = self._failures[1] if self._failures[0] == self.engine.pool.gains else {}
        work = _Pass(self, now_s, waiting, holders, known)
        plan = work.run(keep)
        self._carried, self._layout = dict(plan.reservations), self.engine.pool.layout
        self._failures = (self.engine.pool.gains, work.failed)
        if len(self._amounts) > 2 * max(len(holders), 1000):
            held = {h.job_id for h in holders}
            self._amounts = {job_id: known for job_id, known in self._amounts.items() if job_id in held}
        return plan


class _Pass:
    def __init__(self, planner: Planner, now_s: float, waiting: Sequence[Waiting], holders: Sequence[Holder],
                 failed: dict[tuple, Unplaceable]):
        self.planner, self.engine, self.options = planner, planner.engine, planner.options
        self.now = now_s
        self.waiting = list(waiting)
        self.holders = {h.job_id: h for h in holders}
        self.plan = PassPlan()
        self.phantoms = Phantoms(self.engine)
        self.placed: list[Placement] = []
        # Signatures that found no placement (this pass, or an earlier one when nothing was given
        # back since): the pool only fills up during a pass, so they fail again.
        self.failed: dict[tuple, Unplaceable] = dict(failed)
        self.searches = 0
        self.decisions = 0
        # (signature, queue, priority) for which no victims were found: fewer are left to take as the pass goes on.
        self.no_victims: set[tuple] = set()
        self.by_queue: dict[str, list[Holder]] = defaultdict(list)
        self.nominated: dict[int, list[int]] = defaultdict(list)
        self.taken: set[int] = set()
        holding: set[str] = set()
        for h in holders:
            self.by_queue[h.queue].append(h)
            if h.stopping:
                self.taken.add(h.job_id)
                if h.preempted_for is not None:
                    self.nominated[h.preempted_for].append(h.job_id)
            else:
                holding.add(h.queue)
        self.lowest = {name: min(h.priority for h in queued) for name, queued in self.by_queue.items()}
        self.parts, usage = planner.held_by_queue(holders)
        self.usage: dict[str, Amounts] = defaultdict(dict, usage)
        # What each queue that wants or holds anything deserves of the cost held now (guarantees,
        # then weights): a queue under it may take back what a queue over it was lent.
        wanting = sorted({w.queue for w in waiting} | holding)
        held = sum(self.usage[name].get(COST, 0.0) for name in wanting)
        self.deserved = entitled_costs(held, [planner.entitlement(name) for name in wanting],
                                       {name: planner.guaranteed_cost(name) for name in wanting})

    # ---- the pass ------------------------------------------------------------------------------

    def run(self, keep: bool = False) -> PassPlan:
        ids = {w.job_id for w in self.waiting}
        kept = False
        try:
            for job_id, reservation in self.planner._carried.items():
                if job_id in ids:
                    self.phantoms.hold(job_id, reservation.holdings)
                    self.plan.reservations[job_id] = reservation
            self._serve()
            kept = keep
        finally:
            self.phantoms.drop_all()
            if not kept:
                for placement in reversed(self.placed):
                    self.engine.pool.release(placement.request.job_id)
        return self.plan

    def _serve(self) -> None:
        lines: dict[str, deque[Waiting]] = defaultdict(deque)
        if self.options.fair_share:
            for job in sorted(self.waiting, key=lambda w: (-w.priority, w.submitted_s, w.job_id)):
                lines[job.queue].append(job)
        else:
            rank = {w.job_id: -self.planner.entitlement(w.queue).priority for w in self.waiting}
            for job in sorted(self.waiting, key=lambda w: (rank[w.job_id], -w.priority, w.submitted_s, w.job_id)):
                lines[""].append(job)
        headed: set[str] = set()
        while lines:
            line = min(lines, key=self._line_key) if self.options.fair_share else ""
            job = lines[line].popleft()
            if self.decisions >= self.options.max_decisions and self._known_failure(job) is None:
                self.plan.waiting[job.job_id] = f"not decided this pass (at most {self.options.max_decisions} decisions a pass)"
            else:
                try:
                    outcome = self._consider(job, head=line not in headed)
                except Exception as exc:  # noqa: BLE001 - one job must not stop the pass
                    self.plan.failed[job.job_id] = exc
                    outcome = SKIPPED
                if outcome == WAITS:
                    headed.add(line)
                    if not self.options.backfill:
                        # Only jobs with devices kept for them (freed by preemption) go on.
                        kept = deque(behind for behind in lines[line] if behind.job_id in self.plan.reservations)
                        for behind in lines[line]:
                            if behind.job_id not in self.plan.reservations:
                                self.plan.waiting[behind.job_id] = f"behind job {job.job_id} in its queue's order (no backfill)"
                        lines[line] = kept
            if not lines[line]:
                del lines[line]

    def _known_failure(self, job: Waiting) -> Unplaceable | None:
        """What the engine said this pass to the request ``job`` makes now, if it failed."""
        return self.failed.get(job.request.narrowed(self.now - job.submitted_s).signature)

    def _line_key(self, line: str) -> tuple:
        return queue_order_key(self.usage[line], self.planner.entitlement(line))

    def _consider(self, job: Waiting, head: bool) -> str:
        waited = self.now - job.submitted_s
        request = job.request.narrowed(waited)
        opens = tuple((model, job.submitted_s + after) for model, after in job.request.opens_at_s() if after > waited)
        if opens:
            self.plan.fallbacks[job.job_id] = opens
        if self.nominated.get(job.job_id):
            return self._await_victims(job, request)
        own = self.plan.reservations.pop(job.job_id, None)
        self.phantoms.drop(job.job_id)
        decision = self.failed.get(request.signature) if own is None else None
        if decision is None:
            self.decisions += 1  # only questions to the engine count against the cap
            decision = self.engine.place(request)
        if isinstance(decision, Placement):
            return self._take(job, decision)
        self.failed[request.signature] = decision
        if self.options.backfill and job.max_runtime_s is not None:
            outcome = self._backfill(job, request, self.now + job.max_runtime_s)
            if outcome is not None:
                return outcome
        searched = (request.signature, job.queue, job.priority)
        if self.options.preemption and self.searches < self.options.max_preemption_searches and searched not in self.no_victims:
            if self._preempt(job, request):
                return WAITS
            self.no_victims.add(searched)
        if head and self.options.backfill:
            self._reserve(job, request, decision)
        else:
            self.plan.waiting[job.job_id] = self._said(decision)
        return WAITS

    def _place(self, request: PlacementRequest) -> Placement | None:
        decision = self.engine.place(request)
        return decision if isinstance(decision, Placement) else None

    def _said(self, decision: Unplaceable) -> str:
        return decision.reason if self.options.explain else "no placement fits"

    def _take(self, job: Waiting, placement: Placement) -> str:
        amounts = held_amounts(self.engine.pool, placement.holdings, placement.price_per_hour)
        why = over_limit(self.usage[job.queue], amounts, self.planner.entitlement(job.queue))
        if why is not None:
            self.plan.waiting[job.job_id] = why
            return SKIPPED
        self.engine.apply(placement)
        self.placed.append(placement)
        self.plan.placements.append(placement)
        add(self.usage[job.queue], amounts)
        return PLACED

    # ---- backfill ------------------------------------------------------------------------------

    def _backfill(self, job: Waiting, request: PlacementRequest, ends_s: float) -> str | None:
        """Placed (``_take``) where only reservations that start at or after ``ends_s`` are given
        up; None when it fits nowhere even so."""
        spare = {job_id: holding for job_id, holding in self.phantoms.reserved().items()
                 if self.plan.reservations[job_id].start_s >= ends_s}
        if not spare:
            return None
        for job_id in spare:
            self.phantoms.drop(job_id)
        try:
            placement = self._place(request)
            # Taken before the reservations are held again, so they leave it its devices.
            return None if placement is None else self._take(job, placement)
        finally:
            for job_id, holding in spare.items():
                self.phantoms.hold(job_id, holding)

    def _reserve(self, job: Waiting, request: PlacementRequest, decision: Unplaceable) -> None:
        ends = []
        for h in self.holders.values():
            end = h.expected_end_s
            if h.job_id in self.taken:
                end = min(end, self.now + self.options.grace_s) if end is not None else self.now + self.options.grace_s
            if end is not None:
                ends.append((end, h.job_id))
        found = earliest_start(self.engine, request, ends, self.now, self.phantoms)
        if found is None:
            self.plan.waiting[job.job_id] = self._said(decision) + "; no reservation: jobs without max_runtime hold what it needs"
            return
        start, placement = found
        # The start time is the reservation's (``poold why`` shows it); the reason stays the same
        # from pass to pass while the reservation does, so the job's event log stays quiet.
        why = f"devices reserved for it, free as running jobs reach their max_runtime: {placement.describe(placement.chosen)}"
        self._hold(job, start, placement, why)

    def _hold(self, job: Waiting, start: float, placement: Placement, why: str) -> None:
        reservation = Reservation(job.job_id, start, placement.holdings, why)
        self.plan.reservations[job.job_id] = reservation
        self.phantoms.hold(job.job_id, placement.holdings)
        self.plan.waiting[job.job_id] = why

    # ---- preemption ----------------------------------------------------------------------------

    def _await_victims(self, job: Waiting, request: PlacementRequest) -> str:
        victims = self.nominated[job.job_id]
        reservation = self.plan.reservations.get(job.job_id)
        if reservation is None:
            placement = place_without(self.engine, request, victims, self.phantoms)
            if placement is not None:
                self._hold(job, self.now + self.options.grace_s, placement, "devices of its preempted jobs, kept for it")
                reservation = self.plan.reservations[job.job_id]
        if reservation is not None:
            price = sum(self.holders[v].price_per_hour for v in victims if v in self.holders)
            add(self.usage[job.queue], held_amounts(self.engine.pool, reservation.holdings, price))
        self.plan.waiting[job.job_id] = f"waiting for preempted job(s) {', '.join(map(str, sorted(victims)))} to stop"
        return WAITS

    def _preempt(self, job: Waiting, request: PlacementRequest) -> bool:
        """Choose victims for ``job``: lower-priority jobs of its queue; jobs of other queues above
        their guarantee when its queue is under its own (in a key the job would count for), or,
        reclaiming what was lent, when its queue holds less than it deserves and theirs more (each
        by more than ``share_tolerance`` of what it deserves), and taking them narrows the widest
        gap between held and deserved."""
        queue = self.planner.entitlement(job.queue)
        fair = self.options.fair_share
        under = under_guarantee_keys(self.usage[job.queue], queue) if fair else set()
        slack = self.options.share_tolerance
        short = fair and self._cost(job.queue) < self.deserved.get(job.queue, 0.0) * (1 - slack) - EPSILON
        if not (under or short) and self.lowest.get(job.queue, job.priority) >= job.priority:
            return False  # only lower-priority jobs of its own queue could be taken, and it has none
        candidates = []
        for h in self.holders.values() if under or short else self.by_queue.get(job.queue, ()):
            if h.queue == job.queue and h.priority >= job.priority:
                continue
            if h.job_id in self.taken or not h.movable or h.job_id not in self.engine.pool.holdings:
                continue
            protected = within_guarantee(self.usage[h.queue], self.parts[h.job_id], self.planner.entitlement(h.queue))
            if h.queue == job.queue:
                eligible = h.preemptible or not protected
            else:
                lent = short and self._cost(h.queue) > self.deserved.get(h.queue, 0.0) * (1 + slack) + EPSILON
                eligible = (bool(under) or lent) and not protected
            if eligible:
                devices = sum(len(held.devices) * held.share for held in self.engine.pool.holdings[h.job_id]) or 1.0
                candidates.append(Candidate(h.job_id, h.priority, devices * max(0.0, self.now - h.placed_s)))
        if not candidates:
            return False
        self.searches += 1
        found = cheapest_victims(self.engine, request, candidates, self.phantoms, self.options.max_victim_nodes)
        if found is None:
            return False
        victims = [self.holders[c.job_id] for c in found.victims]
        amounts = held_amounts(self.engine.pool, found.placement.holdings, found.placement.price_per_hour)
        taken_back: dict[str, Amounts] = defaultdict(dict)
        for v in victims:
            add(taken_back[v.queue], self.parts[v.job_id])
        for name, part in taken_back.items():
            if name != job.queue and within_guarantee(self.usage[name], part, self.planner.entitlement(name)):
                return False  # together they are work within the other queue's guarantee
        if set(taken_back) - {job.queue} and not any(amounts.get(key, 0.0) > 0 for key in under):
            if not self._narrows_gap(job.queue, amounts, taken_back):
                return False
        own = dict(self.usage[job.queue])
        add(own, taken_back.get(job.queue, {}), -1.0)
        why = over_limit(own, amounts, queue)
        if why is not None:
            self.plan.waiting[job.job_id] = why
            return True
        for v in victims:
            self.taken.add(v.job_id)
            add(self.usage[v.queue], self.parts[v.job_id], -1.0)
            reason = f"preempted for job {job.job_id} of queue {job.queue}" + (
                " (higher priority)" if v.queue == job.queue else f", which holds less than its {'guarantee' if under else 'share'}")
            self.plan.preemptions.append(Preemption(v.job_id, job.job_id, reason))
        add(self.usage[job.queue], amounts)
        self._hold(job, self.now + self.options.grace_s, found.placement,
                   f"preempting job(s) {', '.join(str(v.job_id) for v in victims)}; its devices are reserved until they stop")
        return True

    def _cost(self, name: str) -> float:
        return self.usage[name].get(COST, 0.0)

    def _narrows_gap(self, name: str, adding: Amounts, taken_back: dict[str, Amounts]) -> bool:
        """Whether moving ``taken_back`` from their queues to ``adding`` on queue ``name`` leaves
        the queues involved strictly closer to what they deserve (no ping-pong between two
        queues over one job: a move that only swaps who is short is refused)."""
        names = {name, *taken_back}
        before = {n: self._cost(n) for n in names}
        after = dict(before)
        after[name] += adding.get(COST, 0.0)
        for n, part in taken_back.items():
            after[n] -= part.get(COST, 0.0)
        return widest_gap(after, self.deserved, names) < widest_gap(before, self.deserved, names) - EPSILON
