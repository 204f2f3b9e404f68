"""What the routes need, handed to the app at creation (no module-level globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from poold.api.intake import SubmitQueue
from poold.auth import Authenticator
from poold.leader import Leadership
from poold.metrics import DaemonMetrics
from poold.telemetry import NodeReports
from poold.scheduler.loop import Scheduler
from poold.scheduler.plan import Capacity
from poold.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    factory: sessionmaker[Session]
    scheduler: Scheduler
    capacity: Capacity
    leader: Leadership
    submits: SubmitQueue
    auth: Authenticator
    reports: NodeReports = field(default_factory=NodeReports)
    wake_scheduler: Callable[[], None] = field(default=lambda: None)
    metrics: DaemonMetrics = field(default_factory=DaemonMetrics)

    @classmethod
    def build(cls, settings: Settings, factory: sessionmaker[Session]) -> "AppContext":
        """The daemon's context: one scheduler and one capacity view over ``factory``'s store
        (the scheduler is woken by ``wake_scheduler``, set by whoever runs the passes)."""
        capacity = Capacity(factory, settings)
        return cls(
            settings=settings,
            factory=factory,
            scheduler=Scheduler(factory, settings),
            capacity=capacity,
            leader=Leadership(factory.kw["bind"]),
            submits=SubmitQueue(factory, settings.scheduler.never_fits, capacity),
            auth=Authenticator(factory, settings.auth.cache_s),
        )
