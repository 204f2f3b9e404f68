"""Settings: TOML then POOLD_* variables, one typed object, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from poold.settings import load_settings
from poold_common.config import SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_loads():
    settings = load_settings(ROOT / "config" / "poold.toml", env={})
    assert settings.prices["H100"] == 4.0 and settings.server.port == 8470
    assert set(settings.queues) == {"default", "interactive"}


def test_environment_overrides_file(tmp_path):
    path = tmp_path / "poold.toml"
    path.write_text('[scheduler]\ninterval_s = 2.0\n[prices]\nH100 = 4.0\n')
    env = {"POOLD_SCHEDULER__INTERVAL_S": "0.5", "POOLD_PRICES__H100": "3.5", "POOLD_DATABASE_URL": "postgresql://x/y", "POOLD_URL": "ignored"}
    settings = load_settings(path, env=env)
    assert settings.scheduler.interval_s == 0.5
    assert settings.prices == {"H100": 3.5}
    assert settings.effective_database_url == "postgresql://x/y"


def test_default_database_is_sqlite_in_state_dir(tmp_path):
    settings = load_settings(None, env={"POOLD_STATE_DIR": str(tmp_path)})
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'poold.db'}"
    assert settings.queues["default"].priority == 0


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[scheduler]\ninterval_s = 'fast'\n", {}, "scheduler.interval_s"),
        ("bogus = 1\n", {}, "bogus: unknown key"),
        ("[server]\nport = 99999\n", {}, "server.port"),
        ("[prices]\nH100 = -1.0\n", {}, "price of H100 is negative"),
        ("", {"POOLD_NODES__TIMEOUT_S": "soon"}, "$POOLD_NODES__TIMEOUT_S: nodes.timeout_s"),
        ("", {"POOLD_SCHEDULR__INTERVAL_S": "1"}, "schedulr: unknown key"),
        ("[server\n", {}, "not valid TOML"),
        ("[queues.prod]\nguarantee = { H100 = -1 }\n", {}, "queues.prod.guarantee.H100"),
        ("[queues.prod]\nlimit = { cost = 'lots' }\n", {}, "queues.prod.limit.cost"),
        ("[queues.prod]\nguarantee = { H100 = 16 }\nlimit = { H100 = 8 }\n", {}, "limit.H100 = 8 is below guarantee.H100 = 16"),
        ("[queues.prod]\nguarantee = { 'H 100' = 1 }\n", {}, "guarantee.H 100: not a device model"),
        ("[queues.prod]\nweight = 0\n", {}, "queues.prod.weight"),
        ("[scheduler]\npreempt_grace_max_s = -1\n", {}, "scheduler.preempt_grace_max_s"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, text, env, message):
    path = tmp_path / "poold.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=None) as info:
        load_settings(path, env=env)
    assert message in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("server", "refused"),
    [
        ({"bind": "127.0.0.1"}, False),
        ({"bind": "::1"}, False),
        ({"bind": "localhost"}, False),
        ({"bind": "0.0.0.0"}, True),
        ({"bind": "10.0.0.5"}, True),
        ({"bind": "gpu-head.example.org"}, True),
        ({"bind": "0.0.0.0", "allow_plain_http": True}, False),
        ({"bind": "0.0.0.0", "tls_cert": "/etc/poold/tls/server.pem", "tls_key": "/etc/poold/tls/server-key.pem"}, False),
    ],
)
def test_plain_http_is_for_loopback_unless_allowed(server, refused):
    from poold.server import check_listener
    from poold.settings import Settings

    settings = Settings(server=server)
    assert (settings.server.plain_http_refusal() is not None) == refused
    if refused:
        with pytest.raises(SettingsError, match=r"server.tls_cert and server.tls_key .* server.allow_plain_http = true"):
            check_listener(settings)


def test_a_certificate_without_its_key_names_both_keys(tmp_path):
    with pytest.raises(SettingsError, match="server: tls_cert and tls_key go together"):
        load_settings(None, env={"POOLD_SERVER__TLS_CERT": str(tmp_path / "server.pem")})


def test_a_certificate_that_does_not_load_stops_the_daemon_naming_the_keys(tmp_path):
    from poold.server import check_listener

    (tmp_path / "server.pem").write_text("not a certificate")
    settings = load_settings(None, env={"POOLD_SERVER__TLS_CERT": str(tmp_path / "server.pem"),
                                        "POOLD_SERVER__TLS_KEY": str(tmp_path / "server-key.pem")})
    with pytest.raises(SettingsError, match="server.tls_cert .* server.tls_key .*: cannot load them"):
        check_listener(settings)


def test_who_may_run_jobs_as_whom():
    from poold.settings import AuthSettings

    auth = AuthSettings(run_as={"alice": ["ml", "alice-svc"]})
    assert auth.may_run_as("alice", "ml") and not auth.may_run_as("alice", "alice") and not auth.may_run_as("bob", "ml")
    assert AuthSettings(run_as_own_name=True).may_run_as("bob", "bob")


def test_queue_entitlements_in_the_config(tmp_path):
    path = tmp_path / "poold.toml"
    path.write_text("[queues.prod]\nweight = 3\nguarantee = { H100 = 16, GPU = 4, Cost = 40.0 }\nlimit = { h100 = 24 }\n")
    prod = load_settings(path, env={}).queues["prod"]
    assert (prod.weight, prod.guarantee, prod.limit) == (3.0, {"H100": 16.0, "gpu": 4.0, "cost": 40.0}, {"h100": 24.0})


def test_the_three_queue_example_in_the_shipped_config_is_valid():
    import tomllib

    from poold.settings import Settings
    from poold.shipped import shipped_path

    text = shipped_path("config", "poold.toml").read_text()
    example = text[text.index("# A three-queue example:"):].splitlines()[1:]
    lines = [line[4:].split("#", 1)[0] for line in example if line.startswith("#   ")]
    queues = Settings.model_validate(tomllib.loads("\n".join(lines))).queues
    assert set(queues) == {"default", "prod", "research"}
    assert (queues["prod"].guarantee, queues["research"].limit) == ({"H100": 16.0}, {"H100": 24.0})
