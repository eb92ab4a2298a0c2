"""The training loop shared by every learned solver.

Adam on the solver's network, one batch per step (fresh instances from the
training distribution, or mini-batches of the training split), validation
every ``eval_every`` steps (and once before training, so a network never ends
worse on validation than its initialisation), early stopping after
``patience`` evaluations without improvement, and the best state restored.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable, Iterator

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


def train(module: torch.nn.Module, loss_fn: Callable[[Instances], torch.Tensor], validate: Callable[[], float],
          context: FitContext, lr: float, fresh_samples: bool = True, desc: str = "training") -> list[dict]:
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
        Adam learning rate.
    fresh_samples : bool
        Draw fresh training instances each step (see ``training_batches``).

    Returns
    -------
    list of dict
        One entry per validation: ``step``, ``train_loss``, ``val_metric``,
        ``seconds``; also stored in ``context.log["training"]``.

    Raises
    ------
    DivergedError
        If the training loss becomes NaN or infinite.
    """
    budget = context.budget
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    batches = training_batches(context, fresh_samples)
    bar = context.progress(total=budget.steps, desc=desc) if context.progress else None
    start = time.perf_counter()

    def evaluate(step: int, train_loss: float) -> float:
        module.eval()
        with torch.no_grad():
            value = float(validate())
        module.train()
        history.append({"step": step, "train_loss": train_loss, "val_metric": value,
                        "seconds": time.perf_counter() - start})
        return value

    history: list[dict] = []
    best_value, best_state = evaluate(0, math.nan), copy.deepcopy(module.state_dict())
    stale, running = 0, math.nan
    module.train()
    for step in range(1, budget.steps + 1):
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
        out_of_time = budget.max_seconds is not None and time.perf_counter() - start > budget.max_seconds
        if step % budget.eval_every == 0 or step == budget.steps or out_of_time:
            value = evaluate(step, running)
            if bar is not None:
                bar.set_postfix(val=f"{value:.3f}", best=f"{min(best_value, value):.3f}")
            if value < best_value:
                best_value, best_state, stale = value, copy.deepcopy(module.state_dict()), 0
            else:
                stale += 1
            if stale >= budget.patience or out_of_time:
                break
    if bar is not None:
        bar.close()
    module.load_state_dict(best_state)
    module.eval()
    context.log["training"] = history
    return history
