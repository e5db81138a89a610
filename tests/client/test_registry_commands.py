"""steph-client register-model / alias: the server's 409 for a not-promoted model names the CLI's flag."""

from __future__ import annotations

import pytest

from app.client.registry_commands import cli_wording
from app.client.transport import ClientError


def test_the_409_hint_names_the_command_line_flag() -> None:
    server = ("model m1 was marked not_promoted by its merge job's promotion gate (reason); "
              'send "allow_not_promoted": true to point an alias at it anyway')  # fmt: skip
    with pytest.raises(ClientError) as ei, cli_wording():
        raise ClientError(409, server, detail={"error": {"code": "conflict"}})
    assert ei.value.status == 409 and ei.value.code == "conflict"
    assert "pass --allow-not-promoted to point an alias" in ei.value.message and "allow_not_promoted" not in (
        ei.value.message)  # fmt: skip
    with pytest.raises(ClientError) as other, cli_wording():  # any other error passes through unchanged
        raise ClientError(404, "no registered model 'x'")
    assert other.value.message == "no registered model 'x'"
