"""Error messages found unclear in a QA sweep: each says what was wrong without contradicting itself."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from app.io.bags import read_bag
from app.io.errors import BagFormatError
from app.services.uploads import display_name


def test_an_h5_features_group_or_dangling_link_is_named_as_such(tmp_path: Path) -> None:
    group = tmp_path / "group.h5"
    with h5py.File(group, "w") as f:
        f.create_group("features").create_dataset("x", data=np.zeros((2, 4), np.float32))
    dangling = tmp_path / "dangling.h5"
    with h5py.File(dangling, "w") as f:
        f["features"] = h5py.SoftLink("/nowhere")
    for path in (group, dangling):
        with pytest.raises(BagFormatError, match="`features` is not a dataset") as info:
            read_bag(path)
        assert "the file holds" not in str(info.value)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("feats", data=np.zeros((2, 4), np.float32))
    with pytest.raises(BagFormatError, match=r"no `features` entry \(the file holds: 'feats'\)"):
        read_bag(other)


def test_display_names_drop_control_characters() -> None:
    assert display_name("a\x00b.h5") == "ab.h5"
    assert display_name("/x/../slide\n1.h5") == "slide1.h5"
    assert display_name("\x00\x01", default="file0") == "file0"


def test_an_invalid_key_names_the_scope_the_route_needs(tmp_path: Path) -> None:
    from app.services.auth import authenticate
    from app.services.errors import Unauthorized
    from tests.workers.world import make_ctx

    ctx = make_ctx(tmp_path)
    try:
        with ctx.session() as s, pytest.raises(Unauthorized, match="steph keys create --scope admin"):
            authenticate(s, key="nope", required_scope="admin")
    finally:
        ctx.close()
