"""What the routes need, handed to the app at creation (no module-level globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from poold.scheduler.loop import Scheduler
from poold.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    factory: sessionmaker[Session]
    scheduler: Scheduler
    wake_scheduler: Callable[[], None] = field(default=lambda: None)
