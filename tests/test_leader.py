"""One replica at a time runs the periodic work; another takes over when it dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from poold.db.session import make_engine
from poold.leader import Leadership


def test_one_leader_at_a_time_and_failover(db_url):
    first, second = Leadership(make_engine(db_url)), Leadership(make_engine(db_url))
    try:
        assert first.held()
        assert not second.held()
        assert first.held()  # keeps it, tick after tick
        first.release()  # the leader goes away
        assert second.held()
        assert not first.held()
    finally:
        first.release()
        second.release()
        first.engine.dispose()
        second.engine.dispose()


def test_a_leader_that_dies_hands_over(db_url, tmp_path):
    """A daemon process takes the lock and is killed; the lock is free at once."""
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import pathlib, time
        from poold.db.session import make_engine
        from poold.leader import Leadership
        assert Leadership(make_engine({db_url!r})).held()
        pathlib.Path({str(ready)!r}).write_text("leading")
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    other = Leadership(make_engine(db_url))
    try:
        for _ in range(200):
            if ready.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert ready.exists(), "the first daemon never took the lock"
        assert not other.held()
        process.kill()
        process.wait(timeout=10)
        held = False
        for _ in range(100):  # PostgreSQL notices the closed connection at once; allow a moment
            if other.held():
                held = True
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert held
    finally:
        process.kill()
        other.release()
        other.engine.dispose()
