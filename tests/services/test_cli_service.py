"""`steph keys create|list|revoke` and `steph migrate` on a temp STEPH_HOME."""

from __future__ import annotations

import pytest

from app.cli import main
from app.db import repositories as repo
from app.services.auth import hash_key
from app.services.context import build_context
from app.settings import Settings


def test_keys_create_prints_only_the_key(home, capsys):
    assert main(["keys", "create", "--scope", "predict", "--name", "hospital"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert out == key + "\n" and key.startswith("steph_predict_") and "created predict key" in err
    ctx = build_context(Settings(home=home))
    try:
        with ctx.session() as s:
            rows = repo.list_api_keys(s)
    finally:
        ctx.close()
    assert [(r.scope, r.name, r.key_hash) for r in rows] == [("predict", "hospital", hash_key(key))]


def test_keys_list_and_revoke(home, capsys):
    main(["keys", "create", "--scope", "admin"])
    key = capsys.readouterr().out.strip()
    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key[:16] in listing and key not in listing and "admin" in listing
    assert main(["keys", "revoke", key[:16]]) == 0
    assert "no active admin key is left" in capsys.readouterr().err  # it was the only one: say how to recover
    assert main(["keys", "create", "--scope", "predict", "--name", "tab\there"]) == 2
    assert "printable" in capsys.readouterr().err
    main(["keys", "list"])
    row = [line for line in capsys.readouterr().out.splitlines() if key[:16] in line][0]
    assert row.split()[4] != "-"  # the REVOKED column holds a date now


def test_migrate_creates_the_database(home, capsys):
    assert main(["migrate"]) == 0
    from app.db.migrate import head_revision

    assert head_revision() in capsys.readouterr().err
    assert (home / "steph.db").is_file()


def test_keys_create_rejects_bad_scope(home):
    with pytest.raises(SystemExit):
        main(["keys", "create", "--scope", "root"])
