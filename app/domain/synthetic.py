"""A synthetic multi-cancer world: feature bags with survival labels whose cancers share prognostic structure.

Generative model (all tensors; deterministic for `WorldConfig.seed`):

- P tissue prototypes μ_1..μ_P ∈ R^D, shared by every cancer (μ_k ~ N(0, I)).
- Cancer c: mean tissue proportions π_c ~ Dirichlet(cancer_concentration · 1_P), a feature shift
  δ_c ~ N(0, s² I) (s = shift_scale), prognostic weights β_c = √f · β_shared + √(1 − f) · β_c,own
  (f = shared_fraction, β ~ N(0, I_P)), and a baseline median survival m_c = median_days · exp(N(0, 0.3²)).
- Patient i of cancer c: proportions p_i ~ Dirichlet(patient_concentration · π_c); each slide holds N patches
  (N uniform in `patches`), patch n = μ_{k_n} + δ_c + noise · ε with k_n ~ Categorical(p_i).
  A fraction `two_slide_fraction` of patients has two slides.
- Log hazard ratio η_i = effect · β_c·(p_i − π_c) / σ_c with σ_c² = β_cᵀ Σ_c β_c and
  Σ_c = (diag π_c − π_c π_cᵀ)/(a₀ + 1) the Dirichlet covariance (η has standard deviation `effect` within
  every cancer).
- Event time (days): Weibull(shape k), T = m_c/(ln 2)^{1/k} · (−ln U · e^{−η})^{1/k}; independent censoring
  C = c_c · Exp(1) with c_c set (bisection) so that about `censoring` of the cancer's patients are censored;
  t = max(min(T, C), 1), e = [T ≤ C].

shared_fraction = 1 gives one prognostic rule for all cancers (the sources' knowledge transfers); 0 is the
control world with no shared prognostic structure (each cancer's rule is independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from app.domain.data import Sample

CANCER_NAMES = (
    "BLCA",
    "BRCA",
    "CESC",
    "COADREAD",
    "GBMLGG",
    "HNSC",
    "KIRC",
    "KIRP",
    "LIHC",
    "LUAD",
    "LUSC",
    "STAD",
    "UCEC",
)  # fmt: skip  (TCGA project names, for readability only: the data is synthetic)


@dataclass(frozen=True)
class WorldConfig:
    """Settings of a synthetic world.

    Sizes: `patients` per cancer (or uniform in `patients_range`, or `sizes` listed per cancer); the target
    cancer gets `target_patients` (when set); `test_fraction` of each cancer's patients form its test split,
    except that with `target_test_patients` the target's train split is its `target_patients` and its test
    split holds `target_test_patients` more patients (a scarce target measured on a large test split).
    """

    cancers: int = 13
    dim: int = 32
    prototypes: int = 16
    patients: int = 200
    patients_range: tuple[int, int] | None = None
    target: str | None = None  # default: the first cancer
    target_patients: int | None = None
    target_test_patients: int | None = None  # set: the target gets this many EXTRA patients, all in its test split
    sizes: tuple[int, ...] | None = None  # set: the size of every cohort, in cancer order (overrides patients*)
    patches: tuple[int, int] = (16, 64)
    shared_fraction: float = 0.8
    shift_scale: float = 0.5
    noise: float = 0.8
    effect: float = 1.0
    censoring: float = 0.3
    cancer_concentration: float = 1.0
    patient_concentration: float = 20.0
    median_days: float = 1500.0
    weibull_shape: float = 1.3
    two_slide_fraction: float = 0.2
    test_fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.cancers >= 1, "cancers must be >= 1"),
            (self.dim >= 1 and self.prototypes >= 2, "dim must be >= 1 and prototypes >= 2"),
            (self.patients >= 4, "patients must be >= 4 (each split needs patients)"),
            (self.target_patients is None or self.target_patients >= 4, "target_patients must be >= 4"),
            (self.target_test_patients is None or self.target_test_patients >= 2, "target_test_patients must be >= 2"),
            (self.sizes is None or (len(self.sizes) == self.cancers and min(self.sizes) >= 4),
             "sizes must give one size >= 4 per cancer"),
            (1 <= self.patches[0] <= self.patches[1], "patches must be (min, max) with 1 <= min <= max"),
            (0.0 <= self.shared_fraction <= 1.0, "shared_fraction must lie in [0, 1]"),
            (0.0 <= self.censoring < 1.0, "censoring must lie in [0, 1)"),
            (0.0 < self.test_fraction < 1.0, "test_fraction must lie in (0, 1)"),
            (self.patients_range is None or 4 <= self.patients_range[0] <= self.patients_range[1],
             "patients_range must be (min, max) with 4 <= min <= max"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(f"WorldConfig: {message}")
        if self.target is not None and self.target not in cancer_names(self.cancers):
            raise ValueError(f"WorldConfig: target {self.target!r} is not one of {cancer_names(self.cancers)}")

    @property
    def target_name(self) -> str:
        return self.target or cancer_names(self.cancers)[0]


def cancer_names(k: int) -> list[str]:
    """The first k cancer names (TCGA-like for k <= 13, then C14, C15, …)."""
    return [CANCER_NAMES[i] if i < len(CANCER_NAMES) else f"C{i + 1}" for i in range(k)]


@dataclass
class SyntheticPatient:
    patient_id: str
    slide_ids: list[str]
    bags: list[Tensor]  # one [N_s, D] float32 tensor per slide
    time: float  # days
    event: int
    log_hazard: float  # the true η (higher = worse prognosis)

    def sample(self) -> Sample:
        return Sample(self.patient_id, torch.cat(self.bags, dim=0), self.time, self.event)


@dataclass
class CancerCohort:
    name: str
    patients: list[SyntheticPatient]
    splits: dict[str, list[str]]  # "train"/"test" -> patient ids
    beta: Tensor  # [P] prognostic weights
    proportions: Tensor  # [P] mean tissue proportions π_c
    shift: Tensor  # [D]
    median_days: float = 1500.0  # the cohort's baseline median survival (drawn per cancer)

    def samples(self, split: str | None = None) -> list[Sample]:
        """Patients as training/evaluation samples (all, or those of `split`)."""
        if split is None:
            return [p.sample() for p in self.patients]
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; known: {sorted(self.splits)}")
        wanted = set(self.splits[split])
        return [p.sample() for p in self.patients if p.patient_id in wanted]


@dataclass
class World:
    config: WorldConfig
    prototypes: Tensor  # [P, D]
    shared_beta: Tensor  # [P]
    cancers: dict[str, CancerCohort] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.config.target_name

    @property
    def sources(self) -> list[str]:
        return [name for name in self.cancers if name != self.target]


def make_world(config: WorldConfig) -> World:
    """Draw a world (deterministic for config.seed; the global torch RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        prototypes = torch.randn(config.prototypes, config.dim)
        shared_beta = torch.randn(config.prototypes)
        world = World(config, prototypes, shared_beta)
        sizes = _cohort_sizes(config)
        for name, n in zip(cancer_names(config.cancers), sizes, strict=True):
            world.cancers[name] = _make_cancer(config, name, n, prototypes, shared_beta)
    return world


def _cohort_sizes(config: WorldConfig) -> list[int]:
    names = cancer_names(config.cancers)
    if config.sizes is not None:
        sizes = list(config.sizes)
    elif config.patients_range is None:
        sizes = [config.patients] * len(names)
    else:
        lo, hi = config.patients_range
        sizes = torch.randint(lo, hi + 1, (len(names),)).tolist()
    if config.target_patients is not None:
        sizes[names.index(config.target_name)] = config.target_patients
    if config.target_test_patients is not None:
        sizes[names.index(config.target_name)] += config.target_test_patients
    return sizes


def _make_cancer(config: WorldConfig, name: str, n: int, prototypes: Tensor, shared_beta: Tensor) -> CancerCohort:
    n_proto = config.prototypes
    pi = torch.distributions.Dirichlet(torch.full((n_proto,), config.cancer_concentration)).sample()
    pi = (pi + 1e-4) / (pi + 1e-4).sum()
    shift = config.shift_scale * torch.randn(config.dim)
    f = config.shared_fraction
    beta = math.sqrt(f) * shared_beta + math.sqrt(1.0 - f) * torch.randn(n_proto)
    median = config.median_days * math.exp(0.3 * float(torch.randn(())))
    cohort = CancerCohort(name, [], {}, beta, pi, shift, median)
    patients = _draw_patients(config, cohort, n, prototypes, "P")
    order = torch.randperm(n).tolist()
    n_test = max(2, min(n - 2, round(config.test_fraction * n)))
    if name == config.target_name and config.target_test_patients is not None:
        n_test = config.target_test_patients
    ids = [p.patient_id for p in patients]
    cohort.patients = patients
    cohort.splits = {"train": sorted(ids[i] for i in order[n_test:]), "test": sorted(ids[i] for i in order[:n_test])}
    return cohort


def _draw_patients(
    config: WorldConfig, cohort: CancerCohort, n: int, prototypes: Tensor, prefix: str
) -> list[SyntheticPatient]:
    """n patients of `cohort`'s distribution (proportions, shift, β, median), from the global torch RNG."""
    a0 = config.patient_concentration
    pi, beta = cohort.proportions, cohort.beta
    props = torch.distributions.Dirichlet(a0 * pi).sample((n,))  # [n, P]
    cov = (torch.diag(pi) - torch.outer(pi, pi)) / (a0 + 1.0)
    sigma = math.sqrt(max(float(beta @ cov @ beta), 0.0))
    eta = config.effect * ((props - pi) @ beta) / max(sigma, 1e-12)  # [n]
    times, events = _survival_times(config, eta, cohort.median_days)
    return [
        _make_patient(
            config, f"{cohort.name}-{prefix}{i:04d}", props[i], prototypes, cohort.shift, times[i], events[i], eta[i]
        )
        for i in range(n)
    ]


def draw_patients(world: World, cancer: str, n: int, seed: int) -> list[SyntheticPatient]:
    """n NEW patients of `cancer`, independent of the world's own (ids <cancer>-E0000 …; the global RNG is untouched).

    The same generative model as the cohort's patients (its proportions, shift, prognostic weights β, median and
    the world's censoring rate), from a separate random stream: an evaluation cohort as large as wanted, whose
    C-index estimates a model's population C-index with little sampling noise.
    """
    if cancer not in world.cancers:
        raise ValueError(f"draw_patients: {cancer!r} is not a cancer of this world ({sorted(world.cancers)})")
    if n < 2:
        raise ValueError("draw_patients: n must be >= 2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1_000_003 * (world.config.seed + 1) + 7919 * (sorted(world.cancers).index(cancer) + 1) + seed)
        return _draw_patients(world.config, world.cancers[cancer], n, world.prototypes, "E")


def _survival_times(config: WorldConfig, eta: Tensor, median: float) -> tuple[Tensor, Tensor]:
    """Weibull event times with hazard ratio e^η and independent exponential censoring (see module doc)."""
    k = config.weibull_shape
    scale = median / math.log(2.0) ** (1.0 / k)
    u = torch.rand(eta.shape[0]).clamp_min(1e-12)
    t_event = scale * (-torch.log(u) * torch.exp(-eta)) ** (1.0 / k)
    if config.censoring <= 0.0:
        return t_event.clamp_min(1.0), torch.ones_like(t_event, dtype=torch.long)
    exp1 = torch.distributions.Exponential(torch.tensor(1.0)).sample(eta.shape)
    lo, hi = math.log(1e-3 * median), math.log(1e4 * median)
    for _ in range(60):  # bisection in log-scale: the censored fraction falls as the censoring scale grows
        mid = 0.5 * (lo + hi)
        if float((math.exp(mid) * exp1 < t_event).float().mean()) > config.censoring:
            lo = mid
        else:
            hi = mid
    t_censor = math.exp(0.5 * (lo + hi)) * exp1
    events = (t_event <= t_censor).long()
    return torch.minimum(t_event, t_censor).clamp_min(1.0), events


def _make_patient(
    config: WorldConfig, pid: str, props: Tensor, prototypes: Tensor, shift: Tensor,
    time: Tensor, event: Tensor, eta: Tensor,
) -> SyntheticPatient:  # fmt: skip
    n_slides = 2 if float(torch.rand(())) < config.two_slide_fraction else 1
    lo, hi = config.patches
    bags = []
    for _ in range(n_slides):
        n_patches = int(torch.randint(lo, hi + 1, ()))
        kinds = torch.multinomial(props, n_patches, replacement=True)
        noise = config.noise * torch.randn(n_patches, config.dim)
        bags.append((prototypes[kinds] + shift + noise).float())
    slide_ids = [f"{pid}-S{j + 1}" for j in range(n_slides)]
    return SyntheticPatient(pid, slide_ids, bags, float(time), int(event), float(eta))
