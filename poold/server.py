"""``poold serve``: the store, the periodic jobs and the HTTP API in one process."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from poold import background
from poold.api.app import create_app
from poold.api.context import AppContext
from poold.db import migrate
from poold.db.session import make_sessionmaker, open_store, transaction
from poold.services.queues import sync_queues
from poold.settings import Settings
from poold_common.sdnotify import notify

log = logging.getLogger(__name__)


def prepare_store(settings: Settings, upgrade: bool):
    """Open the store and bring its schema up to date, or refuse when told not to migrate."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    engine = open_store(settings.effective_database_url)
    if upgrade:
        migrate.upgrade(engine)
    else:
        migrate.ensure_current(engine)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        sync_queues(session, settings)
    return engine, factory


def serve(settings: Settings, upgrade: bool = True) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine, factory = prepare_store(settings, upgrade)
    scheduler = BackgroundScheduler(timezone="UTC")
    ctx = AppContext.build(settings, factory)
    ctx.wake_scheduler = background.register_jobs(scheduler, ctx)
    app = create_app(ctx)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.server.bind else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.server.bind, settings.server.port))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False))

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started:
            log.info("poold listening on http://%s:%d (store: %s)", host, port, engine.url.render_as_string(hide_password=True))
            notify("READY=1")

    scheduler.start()
    threading.Thread(target=announce, name="announce", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        notify("STOPPING=1")
        scheduler.shutdown(wait=True)
        ctx.leader.release()
        engine.dispose()
