"""``poold serve``: the store, the periodic jobs and the HTTP API in one process."""

from __future__ import annotations

import logging
import socket
import ssl
import threading

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from poold import background
from poold.api.app import create_app
from poold.api.context import AppContext
from poold.db import migrate
from poold.db.session import make_sessionmaker, open_store, reading, transaction
from poold.services.queues import sync_queues
from poold.services.tokens import list_tokens
from poold.settings import Settings
from poold_common.config import SettingsError
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


def check_listener(settings: Settings) -> None:
    """Refuse (``SettingsError`` naming the keys) to serve plain HTTP beyond loopback unless
    allowed, or with a certificate and key that do not load."""
    server = settings.server
    refusal = server.plain_http_refusal()
    if refusal is not None:
        raise SettingsError(refusal)
    if server.tls_cert is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(server.tls_cert, server.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"server.tls_cert {server.tls_cert}, server.tls_key {server.tls_key}: cannot load them: {exc}") from None


def serve(settings: Settings, upgrade: bool = True) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_listener(settings)
    engine, factory = prepare_store(settings, upgrade)
    with reading(factory) as session:
        if not any(row.role == "admin" for row in list_tokens(session)):
            log.warning("no valid admin token: make one on this host with `poold token create --local --role admin --user NAME`")
    scheduler = BackgroundScheduler(timezone="UTC")
    ctx = AppContext.build(settings, factory)
    ctx.wake_scheduler = background.register_jobs(scheduler, ctx)
    app = create_app(ctx)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.server.bind else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.server.bind, settings.server.port))
    host, port = sock.getsockname()[:2]
    tls = settings.server.tls_cert is not None
    server = uvicorn.Server(uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False,
                                          ssl_certfile=settings.server.tls_cert, ssl_keyfile=settings.server.tls_key))

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started:
            scheme = "https" if tls else "http"
            log.info("poold listening on %s://%s:%d (store: %s)", scheme, host, port, engine.url.render_as_string(hide_password=True))
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
