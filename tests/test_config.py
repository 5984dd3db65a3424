"""Settings: TOML file (optionally under [edgecert]) or EDGECERT_* variables; the variable wins; bad values are
refused with the setting's name; ``edgecert serve --config FILE`` uses the file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge.config import ConfigError, Settings


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
