"""Settings: TOML file (optionally under [edgecert]) or EDGECERT_* variables; the variable wins; bad values are
refused with the setting's name; ``edgecert serve --config FILE`` uses the file."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import pytest

from edge.config import ConfigError, ConfigWarning, Settings


def test_toml_then_env_then_errors(tmp_path):
    f = tmp_path / "edgecert.toml"
    f.write_text('[edgecert]\nstate_dir = "/srv/state"\nmax_concurrent_orders = 7\nverify_addresses = '
                 '["127.0.0.1:443", "10.0.0.2:443"]\n[edgecert.rate_limits.duplicate_certificates]\ncapacity = 2\n')
    s = Settings.load(f, env={})
    assert s.state_dir == "/srv/state" and s.max_concurrent_orders == 7
    assert s.verify_addresses == ("127.0.0.1:443", "10.0.0.2:443")
    assert s.rate_limits == {"duplicate_certificates": {"capacity": 2}}
    s = Settings.load(f, env={"EDGECERT_STATE_DIR": "/elsewhere", "EDGECERT_VERIFY_ADDRESSES": "a:1, b:2"})
    assert s.state_dir == "/elsewhere" and s.verify_addresses == ("a:1", "b:2")
    assert Settings.load(env={}).acme_directory.startswith("https://acme-v02.api.letsencrypt.org")
    assert "***" in str(Settings.load(env={"EDGECERT_ADMIN_TOKEN": "sekrit"}).redacted())
    bad = tmp_path / "bad.toml"
    for text, needle in (('nope = 1\n', "unknown setting"), ('max_concurrent_orders = "many"\n', "max_concurrent"),
                         ('https_listen = "no-port"\n', "HTTPS_LISTEN"), ('key_type = "dsa"\n', "KEY_TYPE"),
                         ('x = [\n', "not valid TOML")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            Settings.load(bad, env={})
    with pytest.raises(ConfigError, match="not found"):
        Settings.load(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError):
        Settings.load(env={"EDGECERT_UPSTREAM": "ftp://x"})


def test_serve_reports_a_bad_config_file_and_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('sweep_interval = "soon"\n')
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--config", str(bad)], capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "configuration error" in r.stderr and "sweep_interval" in r.stderr


def test_serve_names_a_listen_address_or_state_dir_it_cannot_use_and_exits_2(tmp_path):
    """Settings that parse but cannot be used once serve begins -- a port another process holds, a host name that
    does not resolve, a state dir that cannot be created -- exit 2 naming the setting, no traceback."""
    import socket

    from edge.demo.process import free_port
    root = Path(__file__).resolve().parents[1]
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    base = {"PATH": "/usr/bin:/bin", "EDGECERT_DATABASE_URL": f"sqlite:///{tmp_path}/e.db",
            "EDGECERT_API_LISTEN": f"127.0.0.1:{free_port()}", "EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "EDGECERT_HTTPS_LISTEN": f"127.0.0.1:{free_port()}", "EDGECERT_ACME_DIRECTORY": "https://127.0.0.1:9/dir",
            "EDGECERT_STATE_DIR": str(tmp_path / "state"), "EDGECERT_PREWARM": "false"}
    (tmp_path / "a-file").write_text("in the way")
    cases = [("EDGECERT_HTTP_LISTEN", f"127.0.0.1:{held.getsockname()[1]}", "already in use"),
             ("EDGECERT_HTTPS_LISTEN", f"127.0.0.1:{held.getsockname()[1]}", "already in use"),
             ("EDGECERT_API_LISTEN", "no-such-host.invalid:8080", "does not resolve"),
             ("EDGECERT_STATE_DIR", str(tmp_path / "a-file" / "state"), "state directory")]
    try:
        for var, value, words in cases:
            r = subprocess.run([sys.executable, "-m", "edge", "serve"], capture_output=True, text=True, timeout=60,
                               env={**base, var: value}, cwd=root)
            assert r.returncode == 2, (var, r.returncode, r.stderr[-2000:])
            assert var in r.stderr and words in r.stderr.lower() and "Traceback" not in r.stderr, (var, r.stderr)
    finally:
        held.close()


def test_every_setting_is_a_typed_field_from_toml_or_env(tmp_path):
    f = tmp_path / "edgecert.toml"
    f.write_text('workers = 3\nprobe_interval = 5\nhook_retry_delays = [1, 2.5]\ntls_engine = false\n'
                 'webhook_retry_schedule = "10,20"\n')
    s = Settings.load(f, env={})
    assert (s.workers, s.probe_interval, s.hook_retry_delays, s.tls_engine) == (3, 5.0, (1.0, 2.5), False)
    assert s.webhook_retry_schedule == (10.0, 20.0)
    s = Settings.load(f, env={"EDGECERT_WORKERS": "2", "EDGECERT_HOOK_RETRY_DELAYS": "7,8", "EDGECERT_TLS_ENGINE": "on"})
    assert (s.workers, s.hook_retry_delays, s.tls_engine) == (2, (7.0, 8.0), True)
    assert Settings.from_json(s.to_json()) == s  # what the edge workers receive


def test_the_old_extra_table_still_works_with_a_warning_naming_the_new_variable(tmp_path):
    with pytest.warns(ConfigWarning, match="EDGECERT_PROBE_INTERVAL"):
        s = Settings.load(env={"EDGECERT_EXTRA": '{"probe_interval": 1, "public_burst": 4}'})
    assert (s.probe_interval, s.public_burst) == (1.0, 4)
    f = tmp_path / "old.toml"
    f.write_text('[edgecert.extra]\nworkers = 2\n')
    with pytest.warns(ConfigWarning, match="EDGECERT_WORKERS"):
        assert Settings.load(f, env={}).workers == 2
    with pytest.raises(ConfigError, match="did you mean workers"):
        Settings.load(env={"EDGECERT_EXTRA": '{"wrkers": 2}'})


def test_unknown_names_get_a_did_you_mean(tmp_path):
    with pytest.warns(ConfigWarning, match="EDGECERT_STAT_DIR.*did you mean EDGECERT_STATE_DIR"):
        Settings.load(env={"EDGECERT_STAT_DIR": "/x"})
    f = tmp_path / "typo.toml"
    f.write_text('sweep_intervall = 5\n')
    with pytest.raises(ConfigError, match="did you mean sweep_interval"):
        Settings.load(f, env={})
    # Variables of the CLI, the hook and the tests are not settings and not warned about.
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        Settings.load(env={"EDGECERT_API_URL": "http://x", "EDGECERT_HOSTNAMES": "a b"})


@pytest.mark.parametrize("env, needle", [
    ({"EDGECERT_DATABASE_URL": "postgres://u:p@db/edgecert"}, "postgresql\\+psycopg://u:p@db/edgecert"),
    ({"EDGECERT_DATABASE_URL": "mysql://db"}, "EDGECERT_DATABASE_URL"),
    ({"EDGECERT_EDGE_TARGET": "http://edge.example/"}, "EDGECERT_EDGE_TARGET.*without a scheme"),
    ({"EDGECERT_SWEEP_INTERVAL": "-5"}, "EDGECERT_SWEEP_INTERVAL.*greater than 0"),
    ({"EDGECERT_WORKERS": "two"}, "EDGECERT_WORKERS.*whole number"),
    ({"EDGECERT_WORKERS": "0"}, "EDGECERT_WORKERS.*at least 1"),
    ({"EDGECERT_PROBE_RATE": "0"}, "EDGECERT_PROBE_RATE"),
    ({"EDGECERT_HOOK_RETRY_DELAYS": "5,-1"}, "EDGECERT_HOOK_RETRY_DELAYS"),
    ({"EDGECERT_TLS_ENGINE": "maybe"}, "EDGECERT_TLS_ENGINE.*true or false"),
    ({"EDGECERT_LOG_LEVEL": "LOUD"}, "EDGECERT_LOG_LEVEL"),
    ({"EDGECERT_API_LISTEN": "[::1]"}, "EDGECERT_API_LISTEN.*host:port"),
    ({"EDGECERT_DNS_RECHECK_INITIAL": "100", "EDGECERT_DNS_RECHECK_MAX": "10"}, "EDGECERT_DNS_RECHECK_MAX"),
])
def test_wrong_values_name_the_setting_and_the_accepted_form(env, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.load(env=env)


def test_serve_names_a_bad_variable_exits_2_and_warns_about_typos(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge", "serve"], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "EDGECERT_DATABASE_URL": "postgres://db/x",
                            "EDGECERT_STATE_DIR": str(tmp_path)})
    assert r.returncode == 2 and "postgresql+psycopg://" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_start_up_summary_says_what_is_off():
    text = "\n".join(Settings.load(env={}).summary())
    assert "EDGECERT_ADMIN_TOKEN" in text and "EDGECERT_EDGE_TARGET" in text and "PRODUCTION" in text
    assert "placeholder" in text
    text = "\n".join(Settings.load(env={"EDGECERT_ADMIN_TOKEN": "sekrit-token", "EDGECERT_UPSTREAM": "http://127.0.0.1:3000",
                                        "EDGECERT_ACME_DIRECTORY": "https://ca.test/dir"}).summary())
    assert "DISABLED" not in text and "http://127.0.0.1:3000" in text and "https://ca.test/dir" in text
    assert "sekrit-token" not in text
