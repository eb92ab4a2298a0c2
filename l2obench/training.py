"""The training loop shared by every learned solver.

Adam (or SGD) on the solver's network, one batch per step (fresh instances from the
training distribution, or mini-batches of the training split), validation
every ``eval_every`` steps (and once before training, so a network never ends
worse on validation than its initialisation), early stopping after
``patience`` evaluations without improvement, and the best state restored.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch

from l2obench.contracts import FitContext, Instances
from l2obench.errors import DivergedError


def training_batches(context: FitContext, fresh: bool) -> Iterator[Instances]:
    """Endless batches of ``context.budget.batch_size`` training instances.

    ``fresh``: new draws from the training distribution each step (as LISTA's
    and the learning-to-stop experiments do); otherwise epochs over the fixed
    training split, shuffled by a generator seeded from ``context.seed``.
    """
    size = context.budget.batch_size
    if fresh and context.draw_train is not None:
        while True:
            yield context.draw_train(size)
    generator = torch.Generator().manual_seed(context.seed)
    n = len(context.train)
    while True:
        order = torch.randperm(n, generator=generator).to(next(iter(context.train.observed.values())).device)
        for start in range(0, n - size + 1 if n >= size else 1, size):
            yield context.train.subset(order[start:start + size])


# The optimizers ``train`` offers, by name.
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def train(module: torch.nn.Module, loss_fn: Callable[[Instances], torch.Tensor], validate: Callable[[], float],
          context: FitContext, lr: float, fresh_samples: bool = True, desc: str = "training",
          parameters: Sequence[torch.nn.Parameter] | None = None, steps: int | None = None,
          seconds: float | None = None, optimizer: str = "adam") -> list[dict]:
    """Train ``module`` in place and restore its best validation state.

    Parameters
    ----------
    module : torch.nn.Module
        The trainable network.
    loss_fn : callable
        ``loss_fn(batch) -> scalar tensor`` on a batch of training instances.
    validate : callable
        ``validate() -> float``, lower is better (e.g. validation NMSE in dB).
    context : FitContext
        Budget, seed, data and progress bar factory.
    lr : float
        Learning rate.
    fresh_samples : bool
        Draw fresh training instances each step (see ``training_batches``).
    desc : str
        Label of the progress bar.
    parameters : sequence of Parameter, optional
        The parameters trained (default: all of ``module``'s); the others are
        held fixed (no gradient is computed for them).
    steps : int, optional
        Maximum steps (default: ``context.budget.steps``).
    seconds : float, optional
        Wall-clock cap (default: ``context.budget.max_seconds``).
    optimizer : {"adam", "sgd"}
        Adam (default), or plain stochastic gradient descent.

    Returns
    -------
    list of dict
        One entry per validation: ``step``, ``train_loss``, ``val_metric``,
        ``seconds``.

    Raises
    ------
    DivergedError
        If the training loss becomes NaN or infinite.
    """
    budget = context.budget
    total = budget.steps if steps is None else int(steps)
    limit = budget.max_seconds if seconds is None else seconds
    trained = list(module.parameters()) if parameters is None else list(parameters)
    frozen = _freeze_all_but(module, trained)
    optimizer = OPTIMIZERS[optimizer](trained, lr=lr)
    batches = training_batches(context, fresh_samples)
    bar = context.progress(total=total, desc=desc) if context.progress else None
    start = time.perf_counter()
    history: list[dict] = []

    def evaluate(step: int, train_loss: float) -> float:
        module.eval()
        with torch.no_grad():
            value = float(validate())
        module.train()
        history.append({"step": step, "train_loss": train_loss, "val_metric": value,
                        "seconds": time.perf_counter() - start})
        return math.inf if math.isnan(value) else value

    try:
        best_value, best_state = evaluate(0, math.nan), copy.deepcopy(module.state_dict())
        stale, running = 0, math.nan
        module.train()
        for step in range(1, total + 1):
            loss = loss_fn(next(batches))
            if not torch.isfinite(loss):
                raise DivergedError(f"training loss became {float(loss.detach())} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            running = value if math.isnan(running) else 0.9 * running + 0.1 * value
            if bar is not None:
                bar.update(1)
            out_of_time = limit is not None and time.perf_counter() - start > limit
            if step % budget.eval_every == 0 or step == total or out_of_time:
                value = evaluate(step, running)
                if bar is not None:
                    bar.set_postfix(val=f"{value:.4g}", best=f"{min(best_value, value):.4g}")
                if value < best_value:
                    best_value, best_state, stale = value, copy.deepcopy(module.state_dict()), 0
                else:
                    stale += 1
                if stale >= budget.patience or out_of_time:
                    break
        module.load_state_dict(best_state)
    finally:
        if bar is not None:
            bar.close()
        module.eval()
        for parameter in frozen:
            parameter.requires_grad_(True)
    return history


def _freeze_all_but(module: torch.nn.Module, trained: Sequence[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """Switch off the gradients of ``module``'s parameters not in ``trained``; returns them."""
    keep = {id(p) for p in trained}
    frozen = [p for p in module.parameters() if id(p) not in keep and p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    return frozen


@dataclass(frozen=True)
class Stage:
    """One stage of a staged schedule: what ``train`` gets, and fields added to its history entries."""

    loss_fn: Callable[[Instances], torch.Tensor]
    validate: Callable[[], float]
    lr: float
    parameters: Sequence[torch.nn.Parameter] | None = None
    desc: str = "training"
    fields: dict = field(default_factory=dict)
    steps: int | None = None  # None: an even share of the schedule's steps


def train_stages(module: torch.nn.Module, stages: Sequence[Stage], context: FitContext,
                 fresh_samples: bool = True) -> list[dict]:
    """Run ``stages`` one after the other (each ``train``, its best state restored).

    The budget's ``steps`` and ``max_seconds`` are the schedule's: each stage
    gets its own ``steps``, or else an even share of the budget's steps left to
    the stages without their own, and an even share of the time left.

    Returns
    -------
    list of dict
        Every stage's validations (``train``'s entries) with the stage's ``fields`` and ``lr``.
    """
    shared = [stage for stage in stages if stage.steps is None]
    steps = max(1, context.budget.steps // max(len(shared), 1))
    limit = context.budget.max_seconds
    start = time.perf_counter()
    history: list[dict] = []
    for i, stage in enumerate(stages):
        seconds = None
        if limit is not None:  # the time left, shared evenly by the stages left
            seconds = (limit - (time.perf_counter() - start)) / (len(stages) - i)
            if seconds <= 0:
                break
        entries = train(module, stage.loss_fn, stage.validate, context, lr=stage.lr, fresh_samples=fresh_samples,
                        desc=stage.desc, parameters=stage.parameters,
                        steps=steps if stage.steps is None else stage.steps, seconds=seconds)
        history += [{**entry, **stage.fields, "lr": stage.lr} for entry in entries]
    return history


def decayed_stages(loss_fn: Callable[[Instances], torch.Tensor], validate: Callable[[], float], lr: float,
                   decays: Sequence[float], parameters: Sequence[torch.nn.Parameter] | None = None,
                   desc: str = "training") -> list[Stage]:
    """Training at ``lr``, then at ``lr * d`` for each ``d`` in ``decays`` (learning-rate decay stages)."""
    return [Stage(loss_fn, validate, lr * factor, parameters, f"{desc} lr {lr * factor:.2g}")
            for factor in (1.0, *decays)]


def train_progressive(module: torch.nn.Module, n_layers: int,
                      layer_parameters: Callable[[int], Sequence[torch.nn.Parameter]],
                      loss_at: Callable[[Instances, int], torch.Tensor], validate_at: Callable[[int], float],
                      context: FitContext, lr: float, decays: Sequence[float] = (0.2, 0.02),
                      fresh_samples: bool = True, desc: str = "training") -> list[dict]:
    """Layer-wise (progressive) training, as the reference code of LISTA-CPSS and ALISTA trains.

    For ``t = 1 .. n_layers``: first the parameters of layer ``t`` alone at
    ``lr``, then those of layers ``1 .. t`` at ``lr * d`` for each ``d`` in
    ``decays`` (the learning-rate decay stages), each stage on the loss of layer
    ``t``'s output (``loss_at(batch, t)``), early-stopped on
    ``validate_at(t)`` with its best state restored (``train_stages``: the
    budget is shared evenly by the ``n_layers (1 + len(decays))`` stages).

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    n_layers : int
        Layers ``T``.
    layer_parameters : callable
        ``layer_parameters(t)``: the parameters that layer ``t`` (1-based) adds.
    loss_at, validate_at : callable
        Training loss of a batch and validation score (lower is better) of layer ``t``'s output.
    context : FitContext
    lr : float
        Learning rate of each layer's first stage.
    decays : sequence of float
        Learning-rate factors of the stages that train layers ``1 .. t`` together.

    Returns
    -------
    list of dict
        Every stage's validations (``train``'s entries), each with ``layer`` and ``lr``.
    """
    stages = []
    for t in range(1, n_layers + 1):
        below = [p for s in range(1, t + 1) for p in layer_parameters(s)]
        loss_fn, validate = (lambda batch, t=t: loss_at(batch, t)), (lambda t=t: validate_at(t))
        layer_stages = decayed_stages(loss_fn, validate, lr, decays, below, f"{desc} layer {t}/{n_layers}")
        layer_stages[0] = replace(layer_stages[0], parameters=list(layer_parameters(t)))
        stages += [replace(stage, fields={"layer": t}) for stage in layer_stages]
    return train_stages(module, stages, context, fresh_samples)


def training_curve(history) -> list[dict]:
    """The validation curve of a whole training schedule, from the history a ``fit`` logs.

    Parameters
    ----------
    history : list or mapping
        ``train``'s entries, several ``train`` calls' entries one after the
        other (``train_stages``: each call counts its steps from 0), or a
        mapping of stage names to either (e.g. ``LearnedStopping``'s
        ``{"stage1": [...], "stage2": [...], ...}``; values that are not
        lists of entries, such as its ``stop_support``, are skipped).

    Returns
    -------
    list of dict
        One entry per validation, in training order: ``step`` and ``seconds``
        counted from the start of the schedule, ``val_metric``, ``train_loss``
        (NaN before the first step), and ``stage``, the same for the entries of
        one ``train`` call and different from the previous call's: the
        mapping's key, then ``layer`` and ``lr`` where the entries have them
        (``""`` when there is nothing to tell; a number is added when the label
        alone would not change).
    """
    stages = history.items() if isinstance(history, dict) else [("", history)]
    curve: list[dict] = []
    previous, repeat = None, 1
    for name, entries in stages:
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "step" in e for e in entries):
            continue
        segments: list[list[dict]] = []
        for entry in entries:  # each ``train`` call starts at step 0
            if entry["step"] == 0 or not segments:
                segments.append([])
            segments[-1].append(entry)
        for segment in segments:
            first = segment[0]
            parts = [str(name) if name else "", f"layer {first['layer']}" if "layer" in first else "",
                     f"lr {first['lr']:.3g}" if "lr" in first else ""]
            base = " ".join(p for p in parts if p)
            repeat = repeat + 1 if base == previous else 1
            previous, label = base, base if repeat == 1 else f"{base} #{repeat}".strip()
            step, seconds = (curve[-1]["step"], curve[-1]["seconds"]) if curve else (0, 0.0)
            curve += [{"step": int(step + e["step"]), "seconds": seconds + e["seconds"], "val_metric": e["val_metric"],
                       "train_loss": e["train_loss"], "stage": label} for e in segment]
    return curve
