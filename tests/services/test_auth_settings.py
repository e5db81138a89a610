"""API keys (hashing, scopes, revoke, bootstrap) and Settings defaults."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.db import repositories as repo
from app.services.auth import authenticate, bootstrap_admin_key, create_api_key, revoke_api_key, scope_allows
from app.services.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from app.settings import Settings


def test_keys_are_stored_hashed_with_a_visible_prefix(ctx):
    with ctx.session() as s:
        row, key = create_api_key(s, scope="predict", name="hospital A")
    assert key.startswith("steph_predict_") and len(key) > 40
    with ctx.session() as s:
        stored = repo.list_api_keys(s)
    assert [r.key_hash for r in stored] == [hashlib.sha256(key.encode()).hexdigest()]
    assert stored[0].prefix == key[:16] and key not in (stored[0].prefix, stored[0].name)


def test_authenticate_scopes(ctx):
    with ctx.session() as s:
        _, admin = create_api_key(s, scope="admin")
        _, predict = create_api_key(s, scope="predict")
    with ctx.session() as s:
        assert authenticate(s, key=admin, required_scope="predict").scope == "admin"
        assert authenticate(s, key=predict, required_scope="predict").scope == "predict"
        with pytest.raises(Forbidden, match="scope 'predict'.*needs scope 'admin'"):
            authenticate(s, key=predict, required_scope="admin")
        with pytest.raises(Unauthorized, match="missing API key"):
            authenticate(s, key=None, required_scope="predict")
        with pytest.raises(Unauthorized, match="invalid or revoked"):
            authenticate(s, key=admin + "x", required_scope="predict")
    assert scope_allows("admin", "admin") and scope_allows("admin", "predict")
    assert scope_allows("predict", "predict") and not scope_allows("predict", "admin")


def test_revoke_by_prefix_and_errors(ctx):
    with ctx.session() as s:
        row, key = create_api_key(s, scope="admin")
        with pytest.raises(InvalidInput, match="unknown scope"):
            create_api_key(s, scope="root")
    with ctx.session() as s:
        assert revoke_api_key(s, id_or_prefix=row.prefix).revoked_at is not None
        with pytest.raises(NotFound):
            revoke_api_key(s, id_or_prefix="key_nope")
    with ctx.session() as s, pytest.raises(Unauthorized):
        authenticate(s, key=key, required_scope="predict")


def test_bootstrap_only_once(ctx, capsys):
    key = bootstrap_admin_key(ctx)
    assert key is not None and key in capsys.readouterr().err
    assert ctx.settings.admin_key_path.read_text().strip() == key
    assert bootstrap_admin_key(ctx) is None
    with ctx.session() as s:
        assert [r.scope for r in repo.list_api_keys(s)] == ["admin"]


def test_bootstrap_when_only_predict_keys_exist_but_not_after_an_admin_key_was_revoked(ctx, capsys):
    with ctx.session() as s:
        create_api_key(s, scope="predict", name="made before the first start")
    key = bootstrap_admin_key(ctx)
    assert key is not None and ctx.settings.admin_key_path.read_text().strip() == key
    with ctx.session() as s:
        admin = next(k for k in repo.list_api_keys(s) if k.scope == "admin")
        revoke_api_key(s, id_or_prefix=admin.id)
    assert bootstrap_admin_key(ctx) is None  # a deliberate revocation is not undone by a restart


def test_settings_defaults_follow_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = Settings()
    assert default.home == tmp_path / ".steph"
    assert default.database_url == f"sqlite:///{tmp_path / '.steph' / 'steph.db'}"
    assert default.store_root == tmp_path / "models_store"
    assert default.queue == "embedded" and default.migrate_on_start and default.max_job_attempts == 3
    custom = Settings(home=Path("state"), queue="celery", max_upload_mb=2)
    assert custom.store_root == tmp_path / "state" / "models_store"
    assert custom.migrate_on_start is False and custom.max_upload_bytes == 2 * 2**20
    assert Settings(database_url="postgresql+psycopg://u@db/steph").database_url.startswith("postgresql")


def test_settings_read_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEPH_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("STEPH_MAX_JOB_ATTEMPTS", "5")
    monkeypatch.setenv("STEPH_DATA_ROOT", "data")
    s = Settings()
    assert s.home == tmp_path / "h" and s.max_job_attempts == 5 and s.data_root == tmp_path / "data"
    monkeypatch.setenv("STEPH_QUEUE", "rabbit")
    with pytest.raises(ValueError, match="queue"):
        Settings()


def test_an_empty_variable_means_not_set(monkeypatch):
    """`.env.example` shows optional settings as `STEPH_X=`: uncommented as written, they keep the default."""
    from app.settings import Settings

    monkeypatch.setenv("STEPH_JOB_RETENTION_DAYS", "")
    monkeypatch.setenv("STEPH_WEBHOOK_SECRET", "")
    monkeypatch.setenv("STEPH_MAX_UPLOAD_MB", "")
    s = Settings()
    assert s.job_retention_days is None and s.webhook_secret is None
    assert s.max_upload_mb == Settings.model_fields["max_upload_mb"].default


def test_revoke_matches_literally_and_takes_the_whole_key(ctx):
    """`_` and `%` in a prefix are characters, not wildcards; pasting the leaked key itself revokes it, and the
    error for an unknown key does not echo a secret back."""
    with ctx.session() as s:
        first, _ = create_api_key(s, scope="predict", name="a")
        second, secret = create_api_key(s, scope="predict", name="b")
    with ctx.session() as s:
        with pytest.raises(NotFound):
            revoke_api_key(s, id_or_prefix="%_" + first.prefix[2:])  # was a LIKE pattern matching the key
        with pytest.raises(NotFound):
            revoke_api_key(s, id_or_prefix="st_ph_predict_")
        assert revoke_api_key(s, id_or_prefix=secret).id == second.id
    with ctx.session() as s:
        unknown = "steph_predict_" + "x" * 40
        with pytest.raises(NotFound) as info:
            revoke_api_key(s, id_or_prefix=unknown)
        assert unknown not in str(info.value)
        assert [k.revoked_at is None for k in sorted(repo_keys(s), key=lambda k: k.name)] == [True, False]


def repo_keys(s):
    from app.db import repositories as repo

    return [k for k in repo.list_api_keys(s) if k.name in ("a", "b")]


def test_revoke_takes_the_prefix_as_keys_list_shows_it_and_a_longer_piece_of_the_key(ctx):
    with ctx.session() as s:
        first, secret_a = create_api_key(s, scope="predict", name="a")
        second, secret_b = create_api_key(s, scope="predict", name="b")
    with ctx.session() as s:
        assert revoke_api_key(s, id_or_prefix=first.prefix + "…").id == first.id  # copied from `steph keys list`
        assert revoke_api_key(s, id_or_prefix=secret_b[:20]).id == second.id  # more than the stored prefix
