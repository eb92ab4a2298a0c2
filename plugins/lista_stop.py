"""LISTA-stop: LISTA with a learned, instance-wise stopping policy (thesis chapter 5).

Predictive model: the T-layer LISTA network ``x_t = soft(W1_t b + W2_t x_{t-1}, theta_t)``
(thesis eq. 5.11, ``l2obench.unrolled.LISTANetwork``). Stopping policy:
``pi_t = pi_phi(b, x_t)``, the probability of stopping after layer ``t < T``
(eq. 5.2), an MLP over ``[b, b - A x_t, x_t, e_t]`` (the authors' policy,
``policy_features = "vectors"``) or over scale-free summaries of the iterates
(``"summary"``: the relative step ``||x_t - x_{t-1}|| / ||x_t||``, ``||x_t|| /
||b||`` and the fraction of non-zeros, which cost O(n) an instance where the
vectors cost a product with ``A`` and an MLP layer as wide as a LISTA layer),
with ``e_t`` a sinusoidal encoding of ``t``. Training, model selection, the policy support and
the early-exit and full-depth passes are those of ``l2obench.learned_stopping`` (shared with
DnCNN-stop), with the stopping mathematics of ``l2obench.stopping`` (per-layer losses are the
family's ``loss``); this module declares LISTA's layer step, its policy and its features:

- stage I fits the network against the oracle stop distribution ``q*`` (eq. 5.8-5.9),
  from the ISTA initialisation as in the authors' code, with the learning-rate
  decay stages (``lr_decays``). With ``warm_start`` the network is first trained
  as LISTA is (``schedule``) and stage I starts from there: its last layer is
  then the best on nearly every instance and the policy learns to run all T;
- stage II fixes the network and fits the policy by the forward KL (eq. 5.10).
  With ``hard_oracle`` (the default, as in the authors' code) ``q*`` is
  replaced by its mode, the best layer: imitating a spread ``q*`` leaves every
  stop probability below 1/2, so the ``threshold`` rule would rarely stop;
- stage III (``finetune_steps > 0``) fine-tunes both on eq. 5.6 (Table 5.3).

The prior over stop times is uniform (the thesis's experiments) unless
``layer_cost`` is set: ``p(t) ∝ exp(-layer_cost t / beta)`` (section 5.3.4),
so that a layer is worth running only where it lowers the loss, in units of
the mean ``||x*||^2``, by more than ``layer_cost``
(``l2obench.stopping.with_depth_prior``); model selection in stage II then
scores the rule by the same penalised loss.

After training, the policy is kept only after the layers where its stop
distribution ``q_phi``, averaged over the validation split, holds at least
``support_mass`` (the authors' code likewise restricts stopping to the layers
where the posterior has mass): elsewhere it would almost never stop, and not
running it there is most of what makes stopping cheaper than running on.

At test time the policy decides sequentially after each of those layers, by the rule
``stop_rule``: ``threshold`` stops when ``pi_t > 0.5`` (deterministic),
``sample`` draws the decision from ``Bernoulli(pi_t)`` with a seeded generator,
``never`` runs all T layers (the stage-I network alone). Instances that stop
leave the batch, so early stopping saves real computation.
"""
from __future__ import annotations

import torch
from torch import nn

from l2obench.contracts import FitContext
from l2obench.learned_stopping import LearnedStopping, StoppingModel, position_encoding
from l2obench.unrolled import LISTANetwork, shared_design

__all__ = ["LISTAStop", "LISTAStopModel", "StopPolicy", "position_encoding", "summary_features"]


def summary_features(b: torch.Tensor, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Scale-free summaries of iterate ``x_t`` (``(..., N, n)``) after ``previous = x_{t-1}``: the
    log relative step ``||x_t - x_{t-1}||^2 / ||x_t||^2``, the log ratio ``||x_t||^2 / ||b||^2`` and
    the fraction of non-zeros, ``(..., N, 3)``. Row-wise dot products and no product with ``A``:
    a few percent of a LISTA layer's cost."""
    tiny = torch.finfo(x.dtype).tiny
    dot = torch.linalg.vecdot
    size, before, cross = dot(x, x), dot(previous, previous), dot(x, previous)
    step = (size + before - 2 * cross).clamp_min(0)  # ||x_t - x_{t-1}||^2
    nonzero = x.sign().abs().sum(-1) / x.shape[-1]
    return torch.stack([torch.log((step + tiny) / (size + tiny)), torch.log((size + tiny) / (dot(b, b) + tiny)),
                        nonzero], dim=-1)


class StopPolicy(nn.Module):
    """``pi_phi(b, x_t)``: an MLP to the stop logit from ``[b, b - A x_t, x_t, e_t]`` (``vectors``, the
    authors' policy) or from ``[summary_features(b, x_t, x_{t-1}), e_t]`` (``summary``)."""

    FEATURES = ("vectors", "summary")

    def __init__(self, m: int, n: int, n_layers: int, hidden: int, position_dim: int, features: str = "vectors"):
        super().__init__()
        if features not in self.FEATURES:
            raise ValueError(f"policy features must be one of {', '.join(self.FEATURES)}, got {features!r}")
        self.features = features
        self.register_buffer("encoding", position_encoding(n_layers, position_dim))
        width = (2 * m + n if features == "vectors" else 3) + position_dim
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, t: torch.Tensor | int,
                previous: torch.Tensor) -> torch.Tensor:
        """Stop logits for iterates ``x`` (``(..., N, n)``) after layers ``t`` (0-based), ``previous``
        the iterates before them (zeros before layer 0).

        ``t`` is an int, or a tensor of layer indices broadcastable to ``x``'s
        leading dimensions with a trailing 1 (``(T-1, 1)`` for all layers at once
        during training, with ``x`` of shape ``(T-1, N, n)``).
        """
        code = self.encoding[t]
        code = code.expand(*x.shape[:-1], code.shape[-1])
        b = b.expand(*x.shape[:-1], b.shape[-1])
        if self.features == "vectors":
            features = torch.cat([b, b - x @ A.T, x, code], dim=-1)
        else:
            features = torch.cat([summary_features(b, x, previous), code], dim=-1)
        return self.mlp(features).squeeze(-1)


class LISTAStopModel(StoppingModel):
    """The predictive model (``lista``), the stopping policy (``policy``) and the layers after
    which the policy may stop (``stop_layers``, ``(T-1,)`` booleans) of LISTA-stop."""

    def __init__(self, m: int, n: int, n_layers: int, hidden: int, position_dim: int, features: str = "vectors"):
        super().__init__(n_layers)
        self.lista = LISTANetwork(m, n, n_layers)
        self.policy = StopPolicy(m, n, n_layers, hidden, position_dim, features)

    @property
    def predictive(self) -> LISTANetwork:
        return self.lista

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Layer ``t``'s parameters of the predictive model (its progressive training)."""
        return self.lista.layer_parameters(t)


class LISTAStop(LearnedStopping):
    """LISTA with a learned stopping policy (``lasso`` family), on ``l2obench.learned_stopping``.

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``beta``,
    ``layer_cost``, ``policy_features``, ``warm_start``, ``schedule``, ``gamma``, ``lr``, ``lam_init``,
    ``fresh_samples``, ``policy_hidden``, ``policy_lr``, ``policy_steps``, ``support_mass``,
    ``hard_oracle``, ``finetune_steps``, ``stop_rule``, ``sample_seed``.
    Fitted state: ``network_`` (a ``LISTAStopModel``).
    """

    POSITION_DIM = 8
    INSTANCE_KEYS = ("b",)
    label = "LISTA-stop"

    def network_config(self, context: FitContext) -> dict:
        m, n = shared_design(context, "LISTA-stop").shape
        return {"m": int(m), "n": int(n)}

    def make_network(self, config) -> LISTAStopModel:
        return LISTAStopModel(config["m"], config["n"], self.n_layers, self.policy_hidden, self.POSITION_DIM,
                              self.policy_features)

    def init_network(self, network: LISTAStopModel, context: FitContext) -> None:
        network.lista.set_ista(shared_design(context, "LISTA-stop"), self.lam_init)

    def exit_step(self, t, state, observation):
        return self.network_.lista.layer(t, observation["b"], state)

    def exit_output(self, t, state, observation):
        return state

    def zero_estimate(self, observation):
        b = observation["b"]
        return b.new_zeros(len(b), self.config_["n"])

    def layer_logits(self, observation, t, output, state, previous):
        if previous is None:
            previous = torch.zeros_like(output)
        return self.network_.policy(observation["A"], observation["b"], output, t, previous)

    def all_logits(self, observation, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Stop logits ``(N, T-1)`` after every layer but the last, in one MLP call."""
        b = observation["b"]
        states = torch.stack(outputs[:-1])  # (T-1, N, n)
        previous = torch.cat([torch.zeros_like(states[:1]), states[:-1]])
        layers = torch.arange(len(outputs) - 1, device=b.device).unsqueeze(-1)  # (T-1, 1)
        return self.network_.policy(observation["A"], b.unsqueeze(0), states, layers, previous).T
