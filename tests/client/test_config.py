"""Configuration precedence: flags > environment > config file; the key never shows in repr."""

from __future__ import annotations

import pytest

from app.client.config import ConfigError, resolve_config


@pytest.fixture
def cfg_file(tmp_path):
    f = tmp_path / "client.toml"
    f.write_text('url = "http://file:1"\napi_key = "file-key"\nworkers = 7\nretries = 2\n')
    return f


def test_flags_beat_env_beat_file(cfg_file):
    env = {"STEPH_URL": "http://env:2", "STEPH_API_KEY": "env-key"}
    c = resolve_config(url="http://flag:3/", api_key=None, config_path=cfg_file, env=env)
    assert (c.url, c.api_key, c.workers, c.retries) == ("http://flag:3", "env-key", 7, 2)
    assert c.origin == {"url": "flag", "api_key": "env"}
    c = resolve_config(config_path=cfg_file, env={})
    assert (c.url, c.api_key) == ("http://file:1", "file-key")
    assert "file-key" not in repr(c)


def test_default_config_location_follows_xdg(tmp_path):
    (tmp_path / "steph").mkdir()
    (tmp_path / "steph" / "client.toml").write_text('[client]\nurl = "http://x:1"\nkey_file = "k.txt"\n')
    (tmp_path / "steph" / "k.txt").write_text("secret-from-file\n")
    c = resolve_config(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert (c.url, c.api_key) == ("http://x:1", "secret-from-file")


def test_missing_pieces_are_config_errors(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="STEPH_URL"):
        resolve_config(env=env)
    with pytest.raises(ConfigError, match="STEPH_API_KEY"):
        resolve_config(url="http://a:1", env=env)
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(url="http://a:1", api_key="k", config_path=tmp_path / "missing.toml", env=env)
    bad = tmp_path / "bad.toml"
    bad.write_text("url = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(config_path=bad, env=env)
