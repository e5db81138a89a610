"""The synthetic multi-cancer world: determinism, layout, censoring, and a real prognostic signal."""

from __future__ import annotations

import pytest
import torch

from app.domain.synthetic import WorldConfig, cancer_names, make_world

TINY = WorldConfig(cancers=3, dim=16, prototypes=8, patients=60, patches=(4, 32), seed=7)


def c_index(times: list[float], events: list[int], risks: list[float]) -> float:
    """Harrell's C via the project's metric when it exists, else scikit-survival (its reference)."""
    try:
        from app.domain.metrics import harrell_c_index
    except ImportError:
        import numpy as np
        from sksurv.metrics import concordance_index_censored

        return float(concordance_index_censored(np.array(events, bool), np.array(times), np.array(risks))[0])
    res = harrell_c_index(torch.tensor(times), torch.tensor(events), torch.tensor(risks))
    return float(res.c_index)


@pytest.fixture(scope="module")
def world():
    return make_world(TINY)


def test_same_seed_same_world_and_global_rng_untouched(world):
    state = torch.random.get_rng_state()
    again = make_world(TINY)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name, cohort in world.cancers.items():
        other = again.cancers[name]
        assert cohort.splits == other.splits
        for p, q in zip(cohort.patients, other.patients, strict=True):
            assert (p.patient_id, p.slide_ids, p.time, p.event) == (
                q.patient_id,
                q.slide_ids,
                q.time,
                q.event,
            )
            assert all(torch.equal(a, b) for a, b in zip(p.bags, q.bags, strict=True))


def test_other_seed_other_world(world):
    other = make_world(WorldConfig(**{**TINY.__dict__, "seed": 8}))
    a, b = world.cancers["BLCA"].patients[0], other.cancers["BLCA"].patients[0]
    assert a.time != b.time or not torch.equal(a.bags[0], b.bags[0])


def test_layout_sizes_splits_and_bags(world):
    assert list(world.cancers) == ["BLCA", "BRCA", "CESC"] == cancer_names(3)
    assert world.target == "BLCA" and world.sources == ["BRCA", "CESC"]
    for cohort in world.cancers.values():
        ids = [p.patient_id for p in cohort.patients]
        assert len(ids) == 60 == len(set(ids))
        train, test = set(cohort.splits["train"]), set(cohort.splits["test"])
        assert not train & test and train | test == set(ids) and len(test) == 18
        for p in cohort.patients:
            assert len(p.slide_ids) == len(p.bags) in (1, 2)
            assert all(b.dtype == torch.float32 and b.shape[1] == 16 and 4 <= b.shape[0] <= 32 for b in p.bags)
            assert p.time >= 1.0 and p.event in (0, 1)
        assert any(len(p.bags) == 2 for p in cohort.patients)
        sample = cohort.samples("test")[0]
        patient = next(p for p in cohort.patients if p.patient_id == sample.patient_id)
        assert sample.bag.shape[0] == sum(b.shape[0] for b in patient.bags)


def test_censoring_rate_and_times_span_years():
    world = make_world(WorldConfig(cancers=2, dim=4, prototypes=4, patients=400, patches=(1, 2), seed=3))
    for cohort in world.cancers.values():
        censored = 1 - sum(p.event for p in cohort.patients) / len(cohort.patients)
        assert abs(censored - 0.3) < 0.03
        bins = {min(int(p.time // 365), 31) for p in cohort.patients}
        assert len(bins) >= 5


def test_true_hazard_ranks_patients():
    world = make_world(WorldConfig(cancers=4, dim=4, prototypes=16, patients=300, patches=(1, 2), seed=11))
    for cohort in world.cancers.values():
        pts = cohort.patients
        c = c_index([p.time for p in pts], [p.event for p in pts], [p.log_hazard for p in pts])
        assert c > 0.65, f"{cohort.name}: true hazard C-index {c:.3f}"
        eta = torch.tensor([p.log_hazard for p in pts])
        assert abs(float(eta.std()) - 1.0) < 0.2  # η is standardised to sd = effect = 1 within a cancer


def test_shared_fraction_sets_the_prognostic_overlap():
    shared = make_world(WorldConfig(cancers=4, dim=4, patients=8, patches=(1, 1), shared_fraction=1.0))
    for cohort in shared.cancers.values():
        assert torch.allclose(cohort.beta, shared.shared_beta)
    control = make_world(WorldConfig(cancers=4, dim=4, patients=8, patches=(1, 1), shared_fraction=0.0))
    betas = torch.stack([c.beta for c in control.cancers.values()])
    cos = torch.nn.functional.cosine_similarity(betas[:, None], betas[None], dim=-1)
    off_diag = cos[~torch.eye(4, dtype=torch.bool)]
    assert float(off_diag.abs().max()) < 0.95
    assert all(not torch.allclose(c.beta, control.shared_beta) for c in control.cancers.values())


def test_target_patients_and_range():
    world = make_world(WorldConfig(cancers=3, dim=4, patients=30, target="CESC", target_patients=10, patches=(1, 1)))
    assert [len(c.patients) for c in world.cancers.values()] == [30, 30, 10]
    assert world.target == "CESC"
    ranged = make_world(WorldConfig(cancers=5, dim=4, patients_range=(6, 9), patches=(1, 1)))
    assert all(6 <= len(c.patients) <= 9 for c in ranged.cancers.values())


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"target": "NOPE"}, "target 'NOPE'"),
        ({"shared_fraction": 1.5}, "shared_fraction"),
        ({"patches": (5, 2)}, "patches"),
        ({"censoring": 1.0}, "censoring"),
    ],
)
def test_bad_config_is_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(cancers=3, **bad)


def test_scarce_target_with_a_large_test_split_and_listed_sizes():
    cfg = WorldConfig(cancers=3, dim=4, sizes=(12, 30, 9), target_patients=8, target_test_patients=20, patches=(1, 1))
    world = make_world(cfg)
    target = world.cancers[world.target]
    assert [len(c.patients) for c in world.cancers.values()] == [28, 30, 9]
    assert (len(target.splits["train"]), len(target.splits["test"])) == (8, 20)
    assert set(target.splits["train"]).isdisjoint(target.splits["test"])
    assert len(world.cancers["BRCA"].splits["test"]) == 9  # 30 % of 30: the other cancers are unchanged
    with pytest.raises(ValueError, match="sizes"):
        WorldConfig(cancers=3, sizes=(10, 10))
    with pytest.raises(ValueError, match="target_test_patients"):
        WorldConfig(cancers=3, target_test_patients=1)


def test_draw_patients_is_a_new_cohort_from_the_same_distribution():
    from app.domain.synthetic import draw_patients

    cfg = WorldConfig(cancers=3, dim=4, prototypes=16, patients=40, patches=(1, 2), seed=5)
    world = make_world(cfg)
    state = torch.random.get_rng_state()
    new = draw_patients(world, "BRCA", 600, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    assert [p.patient_id for p in new[:2]] == ["BRCA-E0000", "BRCA-E0001"] and len(new) == 600
    assert not {p.patient_id for p in new} & {p.patient_id for p in world.cancers["BRCA"].patients}
    again = draw_patients(make_world(cfg), "BRCA", 600, seed=0)
    assert [(p.time, p.event) for p in new] == [(p.time, p.event) for p in again]
    assert all(torch.equal(a, b) for p, q in zip(new, again, strict=True) for a, b in zip(p.bags, q.bags, strict=True))
    other = draw_patients(world, "BRCA", 600, seed=1)
    assert [p.time for p in other] != [p.time for p in new]
    # the cohort's own generative model: censoring rate, standardised η, the cohort's β ranks the new patients
    assert abs(1 - sum(p.event for p in new) / 600 - cfg.censoring) < 0.03
    eta = torch.tensor([p.log_hazard for p in new])
    assert abs(float(eta.std()) - cfg.effect) < 0.15
    assert c_index([p.time for p in new], [p.event for p in new], eta.tolist()) > 0.65
    assert all(b.shape[1] == 4 for p in new for b in p.bags)
    # the median is the cohort's own, drawn per cancer
    assert world.cancers["BRCA"].median_days != world.cancers["CESC"].median_days
    with pytest.raises(ValueError, match="not a cancer"):
        draw_patients(world, "NOPE", 10, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        draw_patients(world, "BRCA", 1, seed=0)
