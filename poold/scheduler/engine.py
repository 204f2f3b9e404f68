"""Place one request on the columnar pool: filter, generate candidates, score, pick.

Pure with respect to the store: it reads the pool and returns a decision; the pass
(:mod:`poold.scheduler.loop`) applies and commits it. Per request signature the engine keeps
what it worked out for every node (verdicts, candidates, raw scores) with the node's
generation, and on the next decision recomputes only the nodes whose generation moved:
placing a stream of like jobs costs one node's work per job, not the pool's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from poold.scheduler import candidates as generate
from poold.scheduler.decision import Choice, Placement, Unplaceable  # the engine's answers, importable from here too
from poold.scheduler.framework import Candidates, Context, EngineOptions, Rejections
from poold.scheduler.mix import JobMix
from poold.scheduler.pool import ColumnarPool, Holding, concat_ranges
from poold.scheduler.request import PlacementRequest
from poold.scheduler.scorers.first_fit import node_order
from poold.scheduler.stack import Stack

TOO_FEW = "too_few_devices"
TOO_FEW_NODES = "too_few_nodes"  # a gang: fewer nodes of one network and model can take a part than it has parts
_OK, _NODE_REJECTED = -1, -2
MAX_CACHED_SIGNATURES = 512


@dataclass
class _Static:
    """Devices that pass the static filters for one ``static_key``, valid for one pool layout."""

    layout: int
    devices: np.ndarray
    counts: dict[str, int]
    examples: dict[str, int]


class _Entry:
    """What one signature's decisions know per node; see the module docstring.

    Units are what is ranked per decision: nodes for a CPU-only job, else runs of devices of
    one model on one node ("groups"), each represented by its best candidate."""

    def __init__(self, engine: "Engine", request: PlacementRequest, static: _Static):
        pool = engine.ctx.pool
        self.layout, self.mix_version = pool.layout, engine.ctx.mix.version
        self.static = static
        self.speeds = generate.speed_by_model(request, engine.ctx)
        nodes = pool.n_nodes
        self.seen_gen = np.full(nodes, -1, dtype=np.int64)
        self.node_code = np.full(nodes, _OK, dtype=np.int16)
        self.dev_code = np.full(len(static.devices), _OK, dtype=np.int16)
        dev_node = pool.dev_node[static.devices].astype(np.int64)
        if request.count == 0:
            self.unit_node = pool.alive_nodes().astype(np.int64)
            self.unit_ranges = None
            self.unit_of_position = np.zeros(0, dtype=np.int64)
        else:
            # Runs of one node and one model in the static devices (slots are node-contiguous).
            model = pool.dev_model[static.devices]
            cut = np.flatnonzero((np.diff(dev_node) != 0) | (np.diff(model) != 0)) + 1
            starts = np.concatenate([[0], cut]).astype(np.int64) if len(dev_node) else np.zeros(0, dtype=np.int64)
            ends = np.concatenate([cut, [len(dev_node)]]).astype(np.int64) if len(dev_node) else np.zeros(0, dtype=np.int64)
            self.unit_node = dev_node[starts]
            self.unit_ranges = (starts, ends)
            self.unit_of_position = np.repeat(np.arange(len(starts)), ends - starts)
        units = len(self.unit_node)
        self.models = len(np.unique(pool.dev_model[static.devices])) if request.count else 0  # a runner-up needs two
        self.unit_code = np.full(units, _NODE_REJECTED, dtype=np.int16)
        self.dev_node = dev_node
        self.units_by_node = _index_by(self.unit_node, nodes)
        self.devices_by_node = _index_by(dev_node, nodes)
        self.rows = Candidates(
            node=self.unit_node.copy(),
            devices=np.zeros((units, request.count), dtype=np.int64),
            model=np.zeros(units, dtype=np.int64),
            price=np.zeros(units),
            speed=np.ones(units),
            tier=np.zeros(units, dtype=np.int8),
            links=np.zeros(units, dtype=np.int64),
        )
        # Scorer-major: a decision takes the valid units' columns, one contiguous row per scorer
        # (a unit-major array's rows, taken then transposed, cost ten times as much).
        self.raw = np.zeros((len(engine.stack.scorers), units))


def _index_by(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``keys`` grouped by key: positions of key k are order[ptr[k]:ptr[k + 1]]."""
    order = np.argsort(keys, kind="stable")
    ptr = np.searchsorted(keys[order], np.arange(size + 1))
    return order, ptr


def _positions(index: tuple[np.ndarray, np.ndarray], nodes: np.ndarray) -> np.ndarray:
    order, ptr = index
    if len(nodes) == 1:
        node = int(nodes[0])
        return order[ptr[node] : ptr[node + 1]]
    return order[concat_ranges(ptr[nodes], ptr[nodes + 1])]


class Engine:
    """Decides placements over ``pool`` with the policy ``stack``; see the module docstring."""

    def __init__(self, pool: ColumnarPool, stack: Stack, options: EngineOptions | None = None, mix: JobMix | None = None):
        options = options or EngineOptions()
        self.ctx = Context(pool=pool, mix=mix or JobMix(), options=options)
        self.ctx.static_devices = lambda request: self._static_devices(request).devices
        self.stack = stack
        self.codes: list[str] = []
        self.code_owner: dict[str, object] = {}
        self.stage: dict[str, int] = {}
        stages = (*stack.node_filters, *stack.device_filters, TOO_FEW, *stack.candidate_filters, TOO_FEW_NODES)
        for rank, plugin in enumerate(stages):
            for code in (plugin,) if plugin in (TOO_FEW, TOO_FEW_NODES) else plugin.codes:
                if plugin not in (TOO_FEW, TOO_FEW_NODES):
                    self.code_owner[code] = plugin
                self.codes.append(code)
                self.stage[code] = rank
        self._code_index = {code: i for i, code in enumerate(self.codes)}
        self._static: dict[tuple, _Static] = {}
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()

    @property
    def pool(self) -> ColumnarPool:
        return self.ctx.pool

    # ---- deciding ------------------------------------------------------------------------

    def place(self, request: PlacementRequest) -> Placement | Unplaceable:
        if request.multi_node:
            return place_gang(self, request)
        entry = self._entry(request)
        valid = np.flatnonzero(entry.unit_code == _OK)
        if len(valid) == 0:
            return Unplaceable(request, self.explainer(request, entry))
        normalized, raw, total = self.totals(request, entry, valid)
        best = float(total.max())
        tied = np.flatnonzero(total >= best - 1e-9)
        pick = int(tied[0])
        if len(tied) > 1:
            # Ties go to the first node in this engine's seeded order of the nodes (the order
            # first_fit scores): two daemons, seeded differently, rarely reach for one node.
            nodes = entry.unit_node[valid[tied]]
            pick = int(tied[np.argmin(node_order(self.ctx)[nodes])])
        chosen = self.choice(request, entry, valid, pick, normalized, raw, total)
        runner_up = None
        others = np.flatnonzero(entry.rows.model.take(valid) != entry.rows.model[valid[pick]]) if entry.models > 1 else ()
        if len(others):
            second = int(others[np.argmax(total[others])])
            runner_up = self.choice(request, entry, valid, second, normalized, raw, total)
        return Placement(request, chosen, runner_up, self.pool)

    def explainer(self, request: PlacementRequest, entry: "_Entry") -> Callable[[], Rejections]:
        """Why ``request`` is turned down as the entry's codes are now, counted when first asked
        (the codes are current until the pool changes: copied now, read lazily)."""
        codes = (entry.node_code.copy(), entry.dev_code.copy(), entry.unit_code.copy())
        return lambda: self.rejections(request, entry, codes)

    def totals(self, request: PlacementRequest, entry: "_Entry", valid: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
        """The ``valid`` units' scores: per scorer 0..100 (None where it rated all alike), the
        raw values, and the weighted totals (higher is better)."""
        weights = self.stack.weights(request.objective)
        # The valid units' columns (take: several times faster than fancy indexing).
        raw = entry.raw if len(valid) == entry.raw.shape[1] else entry.raw.take(valid, axis=1)
        total = np.zeros(len(valid))
        normalized = []
        constant = raw.min(axis=1) == raw.max(axis=1)
        for s, scorer in enumerate(self.stack.scorers):
            if constant[s]:
                scores = None  # one value for every candidate: it cannot change the ranking
            else:
                scores = scorer.normalize(request, self.ctx, raw[s])
                total += weights[scorer.name] * scores
            normalized.append(scores)
        return normalized, raw, total

    def apply(self, placement: Placement) -> tuple[Holding, ...]:
        """Hold the whole placement in the pool (every part of a gang); returns its holdings."""
        for holding in placement.holdings:
            self.pool.apply(holding)
        return placement.holdings

    def rejections(self, request: PlacementRequest, entry: _Entry | None = None, codes: tuple | None = None) -> Rejections:
        """Every reason this request is turned down, counted by code, one sentence each: now,
        or as the entry's ``codes`` (node, device, unit) were when they were kept."""
        entry = entry or self._entry(request)
        node_code, dev_code, unit_code = codes or (entry.node_code, entry.dev_code, entry.unit_code)
        pool, rejections = self.pool, Rejections(stage=self.stage)
        alive = pool.node_alive[: len(node_code)]
        if request.count:
            for code, count in entry.static.counts.items():
                rejections.counts[code] = count
                plugin = self.code_owner[code]
                rejections.examples[code] = plugin.explain(code, request, self.ctx, entry.static.examples[code])
        self._count(rejections, request, node_code, np.flatnonzero(alive), "node")
        self._count(rejections, request, dev_code, entry.static.devices, "device")
        self._count(rejections, request, unit_code, np.arange(len(unit_code)), "unit", entry)
        return rejections

    def _count(self, rejections: Rejections, request, codes: np.ndarray, subjects: np.ndarray, level: str, entry=None) -> None:
        picked = codes[subjects] if level == "node" else codes
        present = picked[picked >= 0]
        if not len(present):
            return
        tallies = np.bincount(present, minlength=len(self.codes))
        for index in np.flatnonzero(tallies):
            code = self.codes[index]
            rejections.counts[code] = rejections.counts.get(code, 0) + int(tallies[index])
            if code in rejections.examples:
                continue
            where = int(np.flatnonzero(picked == index)[0])
            subject = int(subjects[where])
            if level == "unit":
                rejections.examples[code] = self._explain_unit(code, request, entry, subject)
            else:
                rejections.examples[code] = self.code_owner[code].explain(code, request, self.ctx, subject)

    def _explain_unit(self, code: str, request: PlacementRequest, entry: _Entry, unit: int) -> str:
        pool = self.pool
        if code == TOO_FEW:
            start, end = int(entry.unit_ranges[0][unit]), int(entry.unit_ranges[1][unit])
            feasible = int(np.count_nonzero(entry.dev_code[start:end] == _OK))
            device = int(entry.static.devices[start])
            node = pool.node_name[int(entry.unit_node[unit])]
            return f"{feasible} suitable {pool.model_name(device)} free on {node}, {request.count} asked"
        return self.code_owner[code].explain(code, request, self.ctx, entry.rows, unit)

    def choice(self, request: PlacementRequest, entry: _Entry, valid: np.ndarray, i: int, normalized: list, raw: np.ndarray, total: np.ndarray) -> Choice:
        row = int(valid[i])
        rows, pool = entry.rows, self.pool
        model = int(rows.model[row])
        scorers, ctx = self.stack.scorers, self.ctx
        # This candidate's values only: a pass keeps its placements, not every decision's arrays.
        scores, column = [None if n is None else n[i] for n in normalized], raw[:, i].copy()

        def parts() -> dict:
            return {
                scorer.name: float(scores[s]) if scores[s] is not None else (partial(scorer.normalize, request, ctx), float(column[s]))
                for s, scorer in enumerate(scorers)
            }

        return Choice(
            node=int(rows.node[row]),
            devices=tuple(rows.devices[row].tolist()),
            model=pool.models.names[model] if model >= 0 else None,
            price_per_hour=float(rows.price[row]),
            speed=float(rows.speed[row]),
            tier=int(rows.tier[row]),
            total=float(total[i]),
            make_parts=parts,
        )

    # ---- per-signature state ---------------------------------------------------------------

    def _entry(self, request: PlacementRequest) -> _Entry:
        pool = self.pool
        entry = self._entries.get(request.signature)
        if entry is None or entry.layout != pool.layout or len(entry.seen_gen) != pool.n_nodes:
            entry = _Entry(self, request, self._static_devices(request))
            self._entries[request.signature] = entry
            if len(self._entries) > MAX_CACHED_SIGNATURES:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(request.signature)
        if entry.mix_version != self.ctx.mix.version:
            # The job mix changed: rescore the candidates the entry holds with the scorers that
            # read the mix (nodes that change later get their candidates chosen anew).
            entry.mix_version = self.ctx.mix.version
            valid = np.flatnonzero(entry.unit_code == _OK)
            rows = entry.rows.take(valid)
            for s, scorer in enumerate(self.stack.scorers):
                if getattr(scorer, "reads_mix", False):
                    entry.raw[s, valid] = scorer.raw(request, self.ctx, rows)
        gens = pool.node_gen[: pool.n_nodes]
        stale = np.flatnonzero((entry.seen_gen != gens) & pool.node_alive[: pool.n_nodes])
        if len(stale):
            self._recompute(request, entry, stale)
            entry.seen_gen[stale] = gens[stale]
        return entry

    def _static_devices(self, request: PlacementRequest) -> _Static:
        pool = self.pool
        key = request.static_key
        found = self._static.get(key)
        if found is not None and found.layout == pool.layout:
            return found
        devices = np.flatnonzero(pool.dev_alive[: pool.n_devices])
        counts: dict[str, int] = {}
        examples: dict[str, int] = {}
        if request.count:
            for plugin in self.stack.device_filters:
                if not plugin.static:
                    continue
                keep = np.ones(len(devices), dtype=bool)
                for code, ok in plugin.check_devices(request, self.ctx, devices):
                    bad = devices[keep & ~ok]
                    if len(bad):
                        counts[code] = counts.get(code, 0) + len(bad)
                        examples.setdefault(code, int(bad[0]))
                        keep &= ok
                devices = devices[keep]
        static = _Static(layout=pool.layout, devices=devices, counts=counts, examples=examples)
        self._static[key] = static
        return static

    def _recompute(self, request: PlacementRequest, entry: _Entry, nodes: np.ndarray) -> None:
        """Judge, generate and score ``nodes`` afresh for ``request``. When every one of them
        is turned down (full, or short of CPU for this request), the recompute stops at the
        stage that turned them down, before candidates are built or scored."""
        ctx = self.ctx
        node_code = np.full(len(nodes), _OK, dtype=np.int16)
        self._first_failure(node_code, (p.check_nodes(request, ctx, nodes) for p in self.stack.node_filters))
        entry.node_code[nodes] = node_code
        units = _positions(entry.units_by_node, nodes)
        entry.unit_code[units] = _NODE_REJECTED
        ok_nodes = nodes[node_code == _OK]
        positions = _positions(entry.devices_by_node, nodes) if request.count else None
        if not len(ok_nodes):
            if request.count:
                entry.dev_code[positions] = _NODE_REJECTED
            return
        node_ok = np.zeros(len(entry.seen_gen), dtype=bool)
        node_ok[ok_nodes] = True
        if request.count == 0:
            ok_units = units[node_ok[entry.unit_node[units]]]
            self._finish(request, entry, ok_units, generate.cpu_only(request, ctx, entry.unit_node[ok_units]))
            return
        devices = entry.static.devices[positions]
        on_ok_node = node_ok[entry.dev_node[positions]]
        dev_code = np.full(len(positions), _NODE_REJECTED, dtype=np.int16)
        judged_code = np.full(int(on_ok_node.sum()), _OK, dtype=np.int16)
        dynamic = (p.check_devices(request, ctx, devices[on_ok_node]) for p in self.stack.device_filters if not p.static)
        self._first_failure(judged_code, dynamic)
        dev_code[on_ok_node] = judged_code
        entry.dev_code[positions] = dev_code
        feasible = positions[dev_code == _OK]
        if request.count == 1:
            # Every feasible device is a candidate; each group then keeps its best (_finish).
            if len(feasible):
                owner = entry.unit_of_position[feasible]
                devices = entry.static.devices[feasible]
                self._finish(request, entry, owner, generate.single_devices(request, ctx, devices, entry.speeds))
            return
        owner = entry.unit_of_position[feasible]
        order = np.argsort(owner, kind="stable")
        owner, feasible = owner[order], feasible[order]
        present, first, have = np.unique(owner, return_index=True, return_counts=True)
        span = {int(u): (int(f), int(f + n)) for u, f, n in zip(present, first, have)}
        groups, ok_units = [], []
        for unit in units.tolist():
            if not node_ok[entry.unit_node[unit]]:
                continue
            start, end = span.get(unit, (0, 0))
            if end - start < request.count:
                entry.unit_code[unit] = self._code_index[TOO_FEW]
                continue
            groups.append(entry.static.devices[feasible[start:end]])
            ok_units.append(unit)
        if ok_units:
            self._finish(request, entry, np.array(ok_units, dtype=np.int64), generate.gangs(request, ctx, groups, entry.speeds))

    def _finish(self, request: PlacementRequest, entry: _Entry, owner: np.ndarray, fresh: Candidates) -> None:
        """Candidate filters and raw scores for fresh candidates of units ``owner``; each unit
        then keeps its best candidate, ranked by the scorers in the objective's order."""
        code = np.full(len(owner), _OK, dtype=np.int16)
        self._first_failure(code, (p.check_candidates(request, self.ctx, fresh) for p in self.stack.candidate_filters))
        failed = code != _OK
        if failed.any():
            # A unit none of whose candidates passed keeps the first failure as its reason.
            entry.unit_code[owner[failed]] = code[failed]
            keep = np.flatnonzero(~failed)
            owner, fresh = owner[keep], fresh.take(keep)
        raw = np.array([scorer.raw(request, self.ctx, fresh) for scorer in self.stack.scorers]).reshape(len(self.stack.scorers), len(owner))
        if request.count == 1 and len(owner):
            keys = [fresh.devices[:, 0]] + [-raw[s] for s in self.stack.ascending(request.objective)] + [owner]
            ranked = np.lexsort(keys)
            first = ranked[np.concatenate([[True], owner[ranked][1:] != owner[ranked][:-1]])]
            owner, fresh, raw = owner[first], fresh.take(first), raw[:, first]
        entry.unit_code[owner] = _OK
        rows = entry.rows
        for name in ("node", "devices", "model", "price", "speed", "tier", "links"):
            getattr(rows, name)[owner] = getattr(fresh, name)
        entry.raw[:, owner] = raw

    def _first_failure(self, codes: np.ndarray, checks) -> None:
        """Write into ``codes`` the first failing check's code index, for each subject still OK."""
        alive = codes == _OK
        for plugin_checks in checks:
            for code, ok in plugin_checks:
                if ok.all():
                    continue  # the common case, in one operation
                newly = alive & ~ok
                if newly.any():
                    codes[newly] = self._code_index[code]
                    alive &= ok


# Gangs decide their parts with this engine's per-node work (and build its Placement): imported last.
from poold.scheduler.gang import place_gang  # noqa: E402
