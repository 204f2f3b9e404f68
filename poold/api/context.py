"""What the routes need, handed to the app at creation (no module-level globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from poold.leader import Leadership
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
    reports: NodeReports = field(default_factory=NodeReports)
    wake_scheduler: Callable[[], None] = field(default=lambda: None)

    @classmethod
    def build(cls, settings: Settings, factory: sessionmaker[Session], wake_scheduler: Callable[[], None] | None = None) -> "AppContext":
        """The daemon's context: one scheduler and one capacity view over ``factory``'s store."""
        return cls(
            settings=settings,
            factory=factory,
            scheduler=Scheduler(factory, settings),
            capacity=Capacity(factory, settings),
            leader=Leadership(factory.kw["bind"]),
            wake_scheduler=wake_scheduler or (lambda: None),
        )
