"""The contract every merge method implements, and the model object training/evaluation/prediction consume.

A merge method turns (θ₀, θ_target, [θ_source…]) plus typed parameters into a `SurvivalModel`:
an nn.Module whose forward(bag [N, D]) returns a `ModelOutput`. Learned methods (and static ones with
`retrain_head`) are then trained by `app.domain.training.train` on `model.trainable_parameters()`.
A model serialises to (tensors, config) and the method's `load` rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from app.domain.mil import ABMIL, FamilyDims, encoder_part
from app.domain.task_vectors import StateDict


class MergeParamsError(ValueError):
    """Bad method parameters: unknown key, wrong type or out of range. The message says which and why."""


@dataclass
class ModelOutput:
    logits: Tensor  # [n_bins] hazard logits
    aux_loss: Tensor  # scalar regulariser added to the NLL in training (0 for static models)
    attention: Tensor | None = None  # [N] attention weights of the ABMIL that scored the bag
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able per-bag extras (e.g. STEPH "sources")


@dataclass
class MergeInputs:
    base: StateDict  # θ₀, full ABMIL state dict (incl. pred_head)
    target: StateDict  # θ_t
    sources: list[StateDict]  # θ_s for each source, same layout
    source_names: list[str]  # one per source (cancer name)
    target_name: str
    dims: FamilyDims
    bin_edges: list[float]


class SurvivalModel(nn.Module):
    """Base for everything that scores a bag. Subclasses set `method` and implement forward."""

    method: str = ""

    def __init__(self, dims: FamilyDims, bin_edges: list[float]) -> None:
        super().__init__()
        self.dims = dims
        self.bin_edges = list(bin_edges)

    def forward(self, bag: Tensor) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters a merge job trains (default: all with requires_grad)."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def models_per_bag(self) -> int:
        """How many models score each bag at prediction (1; an ensemble: its main model and each source kept)."""
        return 1

    def stats_model(self) -> SurvivalModel:
        """The model whose merge statistics (Σw, λ, top-k) describe this one: itself; an ensemble's main model."""
        return self

    def artifact_tensors(self) -> dict[str, Tensor]:
        """Every tensor needed to rebuild the model (contiguous, CPU)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def artifact_config(self) -> dict[str, Any]:
        """JSON-able config; with artifact_tensors() it rebuilds the model through the method's `load`."""
        return {"method": self.method, "dims": self.dims.to_dict(), "bin_edges": self.bin_edges}


class StaticModel(SurvivalModel):
    """One plain ABMIL (a cancer-specific checkpoint or a static merge). Tensors = the reference state dict."""

    def __init__(
        self,
        state: StateDict,
        dims: FamilyDims,
        bin_edges: list[float],
        *,
        method: str = "cancer_specific",
        train_head_only: bool = True,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(dims, bin_edges)
        self.method = method
        self.abmil = ABMIL(dims)
        self.abmil.load_state_dict(state)
        self.extra_config = dict(extra_config or {})
        if train_head_only:
            for name, p in self.abmil.named_parameters():
                p.requires_grad_(name.startswith("pred_head."))

    def forward(self, bag: Tensor) -> ModelOutput:
        enc = self.abmil.encode(bag)
        logits = self.abmil.pred_head(enc.slide_feature)
        return ModelOutput(logits, logits.new_zeros(()), enc.attention, {})

    def artifact_tensors(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.abmil.state_dict().items()}

    def artifact_config(self) -> dict[str, Any]:
        return {**super().artifact_config(), **self.extra_config}

    def reset_head(self, seed: int) -> None:
        """Fresh pred_head (the paper retrains the head from scratch on the target cohort)."""
        gen = torch.Generator().manual_seed(seed)
        head = self.abmil.pred_head
        bound = 1.0 / head.in_features**0.5
        with torch.no_grad():
            head.weight.uniform_(-bound, bound, generator=gen)
            head.bias.uniform_(-bound, bound, generator=gen)


def fresh_head_state(dims: FamilyDims, seed: int) -> StateDict:
    """pred_head.* of a freshly initialised Linear(hidden → n_bins), deterministic for `seed`."""
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / dims.hidden_dim**0.5
    return {
        "pred_head.weight": torch.empty(dims.n_bins, dims.hidden_dim).uniform_(-bound, bound, generator=gen),
        "pred_head.bias": torch.empty(dims.n_bins).uniform_(-bound, bound, generator=gen),
    }


def encoder_with_head(encoder: StateDict, head: StateDict) -> StateDict:
    return {**encoder_part(encoder), **head}


class MergeMethod(ABC):
    """A merge method: name, paper link, typed parameters (a dataclass), build and load."""

    name: ClassVar[str]
    paper: ClassVar[str]
    summary: ClassVar[str]
    params_type: ClassVar[type]
    learned: ClassVar[bool] = False  # True: always trained on the target cohort

    def parse_params(self, raw: dict[str, Any] | None) -> Any:
        """Validate a JSON dict into `params_type`; unknown keys and wrong types raise MergeParamsError."""
        return parse_dataclass(self.params_type, raw or {}, where=f"method {self.name!r}")

    def params_schema(self) -> list[dict[str, Any]]:
        """[{name, type, default, help}] for every parameter (for --help, the API and docs)."""
        return dataclass_schema(self.params_type)

    def check_sources(self, params: Any, n_sources: int) -> None:
        """ValueError when `params` cannot work with `n_sources` source models (checked when a job is
        submitted, once the sources are known, so the job is refused instead of failing later). Default: any
        number works."""
        return None

    def needs_training(self, params: Any) -> bool:
        return self.learned or bool(getattr(params, "retrain_head", False))

    def adapts(self, params: Any, inputs: MergeInputs) -> bool:
        """True when adapt() measures something on the samples (a pass worth a progress report)."""
        return False

    def adapt(
        self, params: Any, inputs: MergeInputs, config: Any, samples: Any, should_cancel: Any = None
    ) -> tuple[Any, dict[str, Any] | None]:
        """Params to train with, decided from the target's train samples before the build (STEPH: β from the
        sources' relevance), and what was measured (JSON-able, or None). Default: the params unchanged."""
        return params, None

    def fit(
        self, inputs: MergeInputs, params: Any, config: Any, samples: Any, *, progress: Any = None,
        should_cancel: Any = None,
    ) -> tuple[SurvivalModel, Any, dict[str, Any]] | None:  # fmt: skip
        """(model, TrainResult | None, notes) for a method whose model is not made by build + train alone
        (ensemble); None (the default) = app.domain.pipeline.fit_parsed builds and trains."""
        return None

    @abstractmethod
    def build(self, inputs: MergeInputs, params: Any, *, seed: int) -> SurvivalModel:
        """Construct the (untrained, if learned) merged model."""

    @abstractmethod
    def load(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
        """Rebuild a model from artifact_tensors() and artifact_config()."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "paper": self.paper,
            "summary": self.summary,
            "learned": self.learned,
            "params": self.params_schema(),
        }


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin in (list, tuple) and typing.get_args(tp):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def dataclass_schema(cls: type) -> list[dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(
            {"name": f.name, "type": _type_name(hints[f.name]), "default": default, "help": f.metadata.get("help", "")}
        )
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except MergeParamsError as exc:
                errors.append(str(exc))
        if len(errors) == 1:  # X | None: the error of X is the precise one
            raise MergeParamsError(f"{errors[0]} (or null)")
        raise MergeParamsError(f"{where}: {value!r} is not {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise MergeParamsError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise MergeParamsError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, where) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise MergeParamsError(f"{where}: expected an object, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise MergeParamsError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MergeParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MergeParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise MergeParamsError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def parse_dataclass(cls: type, raw: dict[str, Any], *, where: str) -> Any:
    if not isinstance(raw, dict):
        raise MergeParamsError(f"{where}: parameters must be an object, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise MergeParamsError(f"{where}: unknown parameter {unknown[0]!r}; known parameters: {', '.join(known)}")
    values = {k: _coerce(v, hints[k], f"{where}, parameter {k!r}") for k, v in raw.items()}
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:
        raise MergeParamsError(f"{where}: {exc}") from None
    return obj
