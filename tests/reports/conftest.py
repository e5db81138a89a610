"""Report tests reuse the API fixtures (a started app on a temp STEPH_HOME, keys, the tiny world) and the CLI's
session-scoped synthetic world with two merged models."""

from tests.api.conftest import admin, client, ctx, family, predict, settings, world  # noqa: F401
from tests.cli.conftest import merged_models, tiny_world  # noqa: F401
