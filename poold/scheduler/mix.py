"""The recent job mix: which shapes of request the pool has been seeing, and how often.

Fragmentation is only meaningful against a workload: free capacity is stranded when the jobs
that come cannot use it. FGD (USENIX ATC'23) measures it against a fixed "target workload"
taken from a trace; poold learns it online from the jobs it sees, with an exponential decay
so that the mix follows the site. Each observed job counts as one; a job seen
``half_life_jobs`` observations ago counts one half.

The published mix (:meth:`JobMix.types`) is reconsidered every ``refresh_every`` observations
and replaced only when it has drifted (the shapes changed, or their probabilities moved by
``drift`` in total variation); a replacement bumps :attr:`JobMix.version`, so scorers can keep
what they compute from it for as long as the mix holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poold.scheduler.request import PlacementRequest


@dataclass(frozen=True)
class MixType:
    """One shape of request in the mix, with its probability among device-taking requests."""

    request: PlacementRequest
    probability: float


@dataclass
class JobMix:
    """Decayed counts of request shapes; see the module docstring."""

    half_life_jobs: float = 2000.0
    refresh_every: int = 256
    coverage: float = 0.95
    max_types: int = 48
    drift: float = 0.05
    version: int = 0
    _weights: dict[tuple, float] = field(default_factory=dict)
    _examples: dict[tuple, PlacementRequest] = field(default_factory=dict)
    _seen: int = 0
    _since_refresh: int = 0
    _published: tuple[MixType, ...] = ()

    def observe(self, request: PlacementRequest) -> None:
        """Count one job of ``request``'s shape. Jobs that take no devices strand nothing and are
        kept out of the mix."""
        if request.count == 0:
            return
        # Increments grow instead of old weights shrinking: the same decay, one multiplication.
        increment = 2.0 ** (self._seen / self.half_life_jobs)
        self._seen += 1
        key = request.shape
        self._weights[key] = self._weights.get(key, 0.0) + increment
        self._examples.setdefault(key, request)
        if increment > 1e100:
            self._rescale()
        self._since_refresh += 1
        if not self._published or self._since_refresh >= self.refresh_every:
            self._publish()

    def types(self) -> tuple[MixType, ...]:
        """The most frequent shapes covering ``coverage`` of the weight (at most ``max_types``),
        renormalised to sum to 1, most frequent first."""
        return self._published

    def _publish(self) -> None:
        self._since_refresh = 0
        total = sum(self._weights.values())
        if total <= 0:
            return
        # Shapes are kept by how often they come (job count). Keeping them by the device capacity
        # they ask for instead (an 8-GPU job weighs 8) dropped the small shares that fill the
        # gaps others leave, and packed worse on the openb replay.
        ranked = sorted(self._weights.items(), key=lambda item: (-item[1], repr(item[0])))
        chosen, covered = [], 0.0
        for key, weight in ranked[: self.max_types]:
            chosen.append(key)
            covered += weight
            if covered >= self.coverage * total:
                break
        published = {key: self._weights[key] / covered for key in chosen}
        if self._published:
            old = {t.request.shape: t.probability for t in self._published}
            moved = sum(abs(published.get(key, 0.0) - old.get(key, 0.0)) for key in set(published) | set(old)) / 2
            if moved < self.drift:
                return
        self._published = tuple(MixType(self._examples[key], probability) for key, probability in published.items())
        self.version += 1

    def _rescale(self) -> None:
        scale = 2.0 ** (-self._seen / self.half_life_jobs)
        self._weights = {key: weight * scale for key, weight in self._weights.items() if weight * scale > 1e-12}
        self._examples = {key: self._examples[key] for key in self._weights}
        self._seen = 0
