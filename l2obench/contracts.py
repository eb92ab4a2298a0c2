"""The contracts between the harness, problem families and solvers.

Problem families produce ``Instances``; solvers ``fit`` on a ``FitContext`` and
``solve`` an observation (a mapping of tensors that never holds the target);
problem families ``evaluate`` a ``Solution`` into ``Measurement`` values.
This module imports no numerical library, so plugins can subclass it cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from l2obench.specs import Param

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Metric:
    """A metric's identity: name, which direction is better, and its unit."""

    name: str
    direction: str  # "lower" or "higher"
    unit: str = ""
    help: str = ""


@dataclass(frozen=True)
class Measurement:
    """One measured number: ``metric`` over ``subset`` of a split (e.g. "snr=20")."""

    metric: str
    value: float
    subset: str = "all"


@dataclass
class Instances:
    """A batch of problem instances.

    Attributes
    ----------
    observed : dict of str to Tensor
        Per-instance observations (first axis = instance), e.g. ``b``.
    shared : dict of str to Tensor
        Observations common to every instance, e.g. a fixed sensing matrix ``A``.
    target : dict of str to Tensor
        Per-instance ground truth, e.g. ``x``; never shown to ``solve``.
    groups : dict of str to Tensor
        Per-instance labels used to report subsets, e.g. the SNR level.
    hidden : frozenset of str
        Keys of ``observed`` that ``observation()`` leaves out: side information
        (``ProblemFamily.side_information``) a solver has not declared it reads.
    """

    observed: dict[str, Any]
    target: dict[str, Any]
    shared: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)
    hidden: frozenset = frozenset()

    def __len__(self) -> int:
        return int(next(iter(self.observed.values())).shape[0])

    def observation(self) -> dict[str, Any]:
        """What a solver may see: the shared and per-instance observations, less the ``hidden`` ones."""
        return {**self.shared, **{k: v for k, v in self.observed.items() if k not in self.hidden}}

    def hiding(self, keys) -> "Instances":
        """These instances with ``observation()`` leaving out ``keys`` (the observations stay, for scoring)."""
        return replace(self, hidden=frozenset(keys))

    def subset(self, index) -> "Instances":
        """Instances selected by ``index`` (a slice or an index tensor)."""
        pick = lambda d: {k: v[index] for k, v in d.items()}  # noqa: E731
        return replace(self, observed=pick(self.observed), target=pick(self.target),
                       groups=pick(self.groups))

    def to(self, device) -> "Instances":
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return replace(self, observed=move(self.observed), target=move(self.target), shared=move(self.shared),
                       groups=move(self.groups))

    def tensors(self) -> dict[str, Any]:
        """Every tensor under a unique name, for hashing and caching."""
        out = {}
        for part in ("observed", "target", "shared", "groups"):
            for k, v in getattr(self, part).items():
                out[f"{part}.{k}"] = v
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Any]) -> "Instances":
        parts: dict[str, dict] = {"observed": {}, "target": {}, "shared": {}, "groups": {}}
        for key, value in tensors.items():
            part, _, name = key.partition(".")
            parts[part][name] = value
        return cls(**parts)


@dataclass
class Solution:
    """What ``solve`` returns.

    Attributes
    ----------
    estimate : Tensor
        One estimate per instance (first axis = instance).
    trajectory : list of Tensor, optional
        Iterates ``x_1 .. x_T`` (each shaped like ``estimate``) when requested.
    iterations : Tensor, optional
        Iterations (or layers) each instance used, e.g. with a stopping rule.
    stop_distribution : Tensor, optional
        ``(N, T)``: the probability that a learned stopping policy stops each
        instance after iteration ``t`` (reported averaged over the test split).
    extras : dict of str to Tensor
        Per-instance tensors the solver exposes beside its estimate (first
        axis = instance), e.g. the energy ``Q_theta(x)`` of a hybrid model's
        neural module; the family's ``evaluate_extras`` turns those it knows
        into metrics against the target, which the solver never sees.
    converged : Tensor, optional
        ``(N,)`` booleans: whether each instance met the solver's stopping
        tolerance (rather than stopping at its iteration limit or its dtype's
        precision). None for solvers run for a fixed number of iterations.
    """

    estimate: Any
    trajectory: list | None = None
    iterations: Any = None
    stop_distribution: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    converged: Any = None


@dataclass(frozen=True)
class Budget:
    """The training budget of a learned solver, set by the suite's scale.

    Parameters
    ----------
    steps : int
        Maximum number of optimizer steps.
    batch_size : int
        Instances per step.
    eval_every : int
        Steps between validation evaluations (early stopping).
    patience : int
        Evaluations without improvement before stopping.
    max_seconds : float, optional
        Wall-clock cap on training.

    Every field is checked against ``Budget.params`` on construction
    (``InvalidValueError``, a ``ValueError``).
    """

    steps: int = 1000
    batch_size: int = 128
    eval_every: int = 100
    patience: int = 5
    max_seconds: float | None = None

    params: ClassVar[Mapping[str, Param]] = {
        "steps": Param(steps, type=int, ge=1, help="maximum number of optimizer steps"),
        "batch_size": Param(batch_size, type=int, ge=1, help="instances per step"),
        "eval_every": Param(eval_every, type=int, ge=1, help="steps between validation evaluations"),
        "patience": Param(patience, type=int, ge=1, help="evaluations without improvement before stopping"),
        "max_seconds": Param(max_seconds, type=float, gt=0, help="wall-clock cap on training; null: none"),
    }

    def __post_init__(self):
        for name, param in self.params.items():
            param.check(name, getattr(self, name))


@dataclass
class FitContext:
    """Everything a solver's ``fit`` may use.

    Attributes
    ----------
    problem : ProblemFamily
        The family (its ``loss`` scores estimates during training and tuning).
    train, val : Instances
        Training and validation splits, on ``device``.
    budget : Budget
        Training budget (learned solvers).
    tune : mapping of str to sequence
        Hyper-parameters to tune on ``val`` and the values to search (those
        with a grid in the solver's spec that the suite did not fix).
    device : torch.device
        Where to compute.
    seed : int
        Seed for the solver's own randomness (initialisation, batches).
    draw_train : callable, optional
        ``draw_train(n)`` returns ``n`` fresh training instances (on ``device``)
        from the training distribution, deterministic given the seed.
    progress : callable, optional
        ``progress(total, desc)`` returns a progress bar (tqdm-like).
    """

    problem: "ProblemFamily"
    train: Instances
    val: Instances
    budget: Budget = field(default_factory=Budget)
    tune: Mapping[str, Any] = field(default_factory=dict)
    device: Any = "cpu"
    seed: int = 0
    draw_train: Callable[[int], Instances] | None = None
    progress: Callable[..., Any] | None = None
    log: dict[str, Any] = field(default_factory=dict)


class Solver:
    """Base class of solvers, in the style of scikit-learn estimators.

    ``__init__`` stores the hyper-parameters (already resolved against the
    spec's defaults) as attributes and does nothing else; ``fit`` returns
    ``self``; fitted state ends with ``_``.
    """

    def __init__(self, **params: Any):
        self._param_names = tuple(params)
        for key, value in params.items():
            setattr(self, key, value)

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names}

    def set_params(self, **params: Any) -> "Solver":
        for key, value in params.items():
            if key not in self._param_names:
                raise ValueError(f"{type(self).__name__} has no hyper-parameter {key!r}")
            setattr(self, key, value)
        return self

    def fit(self, context: FitContext) -> "Solver":
        """Train (learned) or tune (classical) on the context's splits."""
        return self

    def solve(self, observation: Mapping[str, Any], trajectory: bool = False) -> Solution:
        """Solve every instance of ``observation`` (batched)."""
        raise NotImplementedError

    def side_information(self) -> tuple[str, ...]:
        """The family's side information (``ProblemFamily.side_information``) this solver reads, with its
        hyper-parameters; the runner hides the rest from ``fit`` and ``solve``. Default: none."""
        return ()

    def state_dict(self) -> dict[str, Any]:
        """Fitted state, loadable with ``torch.load(..., weights_only=True)``."""
        return {"params": self.get_params()}

    def load_state_dict(self, state: Mapping[str, Any]) -> "Solver":
        self.set_params(**state["params"])
        return self

    def to(self, device) -> "Solver":
        """Move fitted tensors to ``device`` (classical solvers hold none)."""
        return self


class ProblemFamily:
    """Base class of problem families.

    Subclasses set ``metrics`` (the metrics ``evaluate`` returns),
    ``primary_metric`` (the one reported per iteration and in summaries),
    ``gap_metric`` (linear-scale metric of the generalization gap),
    ``version`` (part of the data cache key), ``data_term`` (the name of
    its smooth loss in ``l2obench.datafits``, e.g. ``"least_squares"``, which
    solvers build from an observation instead of inspecting its keys) and
    ``stream_free_settings`` (settings left out of the splits' seed streams,
    ``l2obench.data.make_splits``: a family whose draws of a split do not
    depend on them, e.g. a training-set size taken as the first ``n`` of a
    fixed pool, then gives nested training sets and identical other splits
    across a sweep of them), ``side_information`` (observation keys only solvers
    that declare them, ``Solver.side_information``, see; e.g. the noise level
    of a denoising instance, which blind denoisers must not read). ``__init__``
    stores the resolved settings as attributes.
    """

    metrics: Mapping[str, Metric] = {}
    primary_metric: str = ""
    gap_metric: str = ""
    version: str = "1"  # bump when generation changes, so cached data are not reused
    data_term: str | None = None  # a key of l2obench.datafits.DATA_TERMS; None: the family names none
    stream_free_settings: tuple[str, ...] = ()
    side_information: tuple[str, ...] = ()

    def __init__(self, **settings: Any):
        self.settings = dict(settings)
        for key, value in settings.items():
            setattr(self, key, value)

    def split_sizes(self) -> dict[str, int]:
        """Number of instances in each split, e.g. ``{"train": .., "val": .., "test": ..}``."""
        raise NotImplementedError

    def memory_bytes(self) -> int | None:
        """Bytes of the tensors one seed's data hold at once (every split and the shared tensors), a
        lower bound that planning compares with the memory available (``l2obench.memory``); ``None``:
        no estimate."""
        return None

    def draw_shared(self, generator: "torch.Generator") -> dict[str, Any]:
        """Tensors common to all instances of one seed (e.g. a sensing matrix)."""
        return {}

    def draw(self, n: int, generator: "torch.Generator", shared: Mapping[str, Any],
             split: str) -> Instances:
        """Draw ``n`` instances of ``split`` on the CPU."""
        raise NotImplementedError

    def loss(self, estimate, target: Mapping[str, Any]):
        """Per-instance loss used for training and tuning (lower is better)."""
        raise NotImplementedError

    def evaluate(self, estimate, instances: Instances, per_subset: bool = True) -> list[Measurement]:
        """Metrics of ``estimate`` against the instances' targets."""
        raise NotImplementedError

    def evaluate_extras(self, extras: Mapping[str, Any], instances: Instances,
                        per_subset: bool = True) -> list[Measurement]:
        """Metrics of a solution's ``extras`` (``Solution.extras``) against the targets.

        Problem-specific metrics of what a solver exposes beside its estimate,
        e.g. the error of a hybrid model's neural module. The runner reports
        them with ``evaluate``'s (declare them in ``metrics`` too). Default:
        none; keys a family does not know are ignored.
        """
        return []

    def illustrations(self, estimate, instances: Instances) -> dict[str, bytes]:
        """Files that show a solution to a reader, e.g. PNGs of a few test images: ``{name: bytes}``.

        The runner writes them under the results directory, in
        ``images/<problem>/seed<seed>/<solver>/<split>/``, except names under
        ``input/`` (the solver's input and the target, the same for every solver
        of a setting), written once in ``images/<problem>/seed<seed>/input/<split>/``.
        Default: none.
        """
        return {}

    # Optional hooks of the algorithm-property probes (``l2obench.probes``).

    def minimizer(self, observation: Mapping[str, Any]):
        """The exact minimizer of the objective an observation defines (per instance), or ``None`` if unknown."""
        return None

    def perturb(self, observation: Mapping[str, Any], eps: float, generator) -> tuple[dict, Any]:
        """A random perturbation of an observation's problem data, and its size per instance ``(N,)``.

        The size is what the stability of thesis eq. 4.7 divides by (e.g.
        ``||Q - Q'||_2 + ||b - b'||_2``), about ``eps`` per perturbed tensor.
        """
        raise NotImplementedError(f"{type(self).__name__} does not say how to perturb its instances "
                                  "(ProblemFamily.perturb), which the stability probe needs")


def check_estimate(family: ProblemFamily, estimate: Any, instances: Instances) -> None:
    """Check that ``estimate`` is what ``family`` expects for ``instances``, before it is scored.

    The estimate must be a floating-point tensor with one row per instance, and the family's
    ``loss`` of it must give exactly one value per instance (shape ``(N,)``): an estimate that
    would broadcast against the target, e.g. ``(N, 1, n)`` for a target ``(N, n)``, fails.

    Raises
    ------
    l2obench.errors.InvalidEstimateError
        Naming the estimate's shape and dtype and what is wrong.
    """
    import torch

    from l2obench.errors import InvalidEstimateError

    n = len(instances)
    if not torch.is_tensor(estimate):
        raise InvalidEstimateError(f"the estimate must be a tensor, got {type(estimate).__name__}")
    what = f"estimate of shape {tuple(estimate.shape)} and dtype {estimate.dtype}"
    if not estimate.is_floating_point():
        raise InvalidEstimateError(f"{what}: expected a floating-point tensor")
    if estimate.ndim == 0 or estimate.shape[0] != n:
        raise InvalidEstimateError(f"{what}: expected one row per instance ({n})")
    try:
        loss = family.loss(estimate, instances.target)
    except RuntimeError as exc:  # torch's shape mismatch
        raise InvalidEstimateError(f"{what} does not match the {type(family).__name__} target: {exc}") from exc
    if not torch.is_tensor(loss) or tuple(loss.shape) != (n,):
        shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise InvalidEstimateError(f"{what} is not shaped like the {type(family).__name__} target: its loss has "
                                   f"shape {shape}, not one value per instance ({n},)")


def hidden_from(solver: Solver, family: ProblemFamily) -> frozenset:
    """The observation keys ``solver`` must not see: the family's side information it does not declare
    (a solver that does not subclass ``Solver`` and lacks ``side_information`` declares none)."""
    declared = getattr(solver, "side_information", None)
    return frozenset(getattr(family, "side_information", ())) - frozenset(declared() if callable(declared) else ())
