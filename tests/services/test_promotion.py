"""The promotion gate's service side: gate settings from job params + settings, and the fields a job records."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.services.errors import UnprocessableInput
from app.services.promotion import gate_config, promotion_fields


def test_gate_config_takes_the_settings_default_and_job_overrides():
    settings = SimpleNamespace(merge_gate="full", merge_gate_margin=0.01)
    gate = gate_config({}, settings)
    assert (gate.mode, gate.n_folds, gate.margin) == ("full", 5, 0.01)
    gate = gate_config({"gate": "off", "gate_margin": 0.02, "epochs": 3}, settings)
    assert (gate.mode, gate.margin) == ("off", 0.02)
    assert gate_config(None).mode == "fast"
    with pytest.raises(UnprocessableInput, match="gate_folds"):
        gate_config({"gate_folds": 0})


def test_promotion_fields_report_the_status_and_a_collapse():
    est = {"difference": -0.02}
    run = SimpleNamespace(
        promotion={"status": "not_promoted", "reason": "gain -0.020", "estimate": est},
        merge_stats={"collapsed": True},
    )
    fields = promotion_fields(run)
    assert fields["promotion_status"] == "not_promoted"
    assert fields["promotion"]["estimate"] == est and fields["promotion"]["collapsed"] is True
    assert "collapsed" in fields["job_promotion"]["reason"] and "estimate" not in fields["job_promotion"]
    plain = promotion_fields(SimpleNamespace(promotion=None, merge_stats=None))
    assert plain["promotion_status"] == "unchecked" and "collapsed" not in plain["promotion"]
