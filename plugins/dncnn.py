"""DnCNN and DnCNN-stop: learned blind denoisers (thesis 5.5.3, Table 5.6).

DnCNN (Zhang et al. 2017, ``l2obench.dncnn.DnCNN``) reads the noisy image only,
never its noise level, and predicts the noise (residual learning): the estimate
is ``noisy - DnCNN(noisy)``. It trains through ``l2obench.training`` on the
family's per-image mean squared error, with Adam and learning-rate decay stages,
early-stopped on the validation split. Each step trains on random ``patch x
patch`` crops of the batch's images (the paper trains on 40 x 40 / 50 x 50
patches), under one of the 8 flips and rotations of the square (the paper's
augmentation), drawn from a generator seeded by the cell's seed. Its last
convolution starts at zero: untrained, it returns the noisy image.

DnCNN-stop (thesis 5.5.3; the authors' ``DnCNN_DS`` and ``MulticlassNet``): the
predictive model is DnCNN with exits, heads that predict the noise from the
features of layers ``1 .. depth - 2`` (every ``exit_every``-th), its outputs
``x_t = noisy - head_t(features)`` and, last, DnCNN's own output; the stopping
policy ``pi_phi(y, x_t, t)`` is a small CNN over ``[y, x_t, y - x_t]`` (as the
authors') with the encoding of ``t`` joined before its last layers (the
authors' policy has no ``t``; its batch normalisation is left out here, so that
all exits are scored in one batched call). It trains by the stages of
``l2obench.learned_stopping`` (thesis 5.4: stage I on the oracle stop
distribution, stage II by the forward KL with the predictive model's batch
normalisation on its running statistics, optional stage III), every stage on
random patches. With ``warm_start`` (the default) the network first trains as
DnCNN (its last output), then stage I fine-tunes it with the exits at a tenth of
``lr`` for ``stage1_steps``, as the authors pretrain DnCNN at 1e-3 and fine-tune
``DnCNN_DS`` at 1e-4; before that, ``head_steps`` train the exit heads alone at
``lr`` (the authors fine-tune for 50 epochs; a short budget at a tenth of ``lr``
leaves the heads, which start at zero, near the noisy input). The policy starts as one that never stops
(``INITIAL_STOP_LOGIT``). An early exit skips the remaining layers for the
images that stop; ``iterations`` and the stop distribution count exits (exit
``t`` sits after layer ``exit_layers[t-1]``, the last exit after layer ``depth``).

Both train on patches and solve in chunks of images with ``l2obench.image_training``.
"""
from __future__ import annotations

import torch
from torch import nn

from l2obench.contracts import FitContext, Solution
from l2obench.dncnn import DnCNN, exit_layers
from l2obench.image_training import IMAGE_CHUNK, PatchTraining, solve_in_chunks
from l2obench.learned import LearnedSolver, split_mean
from l2obench.learned_stopping import FINETUNE_LR_FACTOR, LearnedStopping, StoppingModel, position_encoding
from l2obench.training import Stage

__all__ = ["DnCNNDenoiser", "DnCNNStop", "DnCNNStopModel", "ImageStopPolicy"]

# The policy's stop logit starts near this (pi about 3e-4): untrained, it never stops and its stop
# distribution has less mass than ``support_mass`` after every exit, so the policy does not run
# (a policy whose stage II never beats running on costs nothing at solve time). With the
# authors' initialisation (pi about 0.5) a short stage II left a policy that stopped every
# image at exit 1 (measured at the smoke scale: 18.1 dB against 24.0 for DnCNN).
INITIAL_STOP_LOGIT = -8.0


class DnCNNDenoiser(PatchTraining, LearnedSolver):
    """DnCNN, blind (``denoising`` family).

    Hyper-parameters (see ``l2obench list``): ``n_layers``, ``width``, ``lr``,
    ``lr_decays``, ``patch``, ``augment``, ``fresh_samples``. Fitted state:
    ``network_`` (an ``l2obench.dncnn.DnCNN``).
    """

    def make_network(self, config) -> DnCNN:
        return DnCNN(self.n_layers, self.width, config["channels"])

    def forward(self, observation, keep_all: bool = True, depth: int | None = None) -> list[torch.Tensor]:
        noisy = observation["noisy"]
        return [noisy - self.network_(noisy)]

    def train_network(self, context: FitContext) -> list[dict]:
        """Adam on the family's loss of random patches, then the learning-rate decay stages."""
        self.start_patches(context)
        return self.train_last_output(context, self.describe_training())

    def solve(self, observation, trajectory: bool = False) -> Solution:
        return solve_in_chunks(lambda part: LearnedSolver.solve(self, part, trajectory), observation)


class ImageStopPolicy(nn.Module):
    """``pi_phi(y, x_t, t)``: stop logit from a CNN over ``[y, x_t, y - x_t]`` (two 3 x 3 convolutions,
    ReLU and 2 x 2 max pooling, a third convolution, global average pooling), joined with the
    sinusoidal encoding of ``t``, then a ReLU layer and a linear one (its bias starting at
    ``INITIAL_STOP_LOGIT``)."""

    def __init__(self, channels: int, hidden: int, n_positions: int, position_dim: int):
        super().__init__()
        self.register_buffer("encoding", position_encoding(n_positions, position_dim))
        self.cnn = nn.Sequential(
            nn.Conv2d(3 * channels, hidden, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(hidden + position_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.constant_(self.mlp[-1].bias, INITIAL_STOP_LOGIT)

    def forward(self, noisy: torch.Tensor, estimate: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Stop logits ``(N,)`` for estimates after exits ``t`` (0-based; an int or ``(N,)`` indices)."""
        features = self.cnn(torch.cat([noisy, estimate, noisy - estimate], dim=1))
        code = self.encoding[t].expand(len(features), -1)
        return self.mlp(torch.cat([features, code], dim=-1)).squeeze(-1)


class DnCNNStopModel(StoppingModel):
    """DnCNN with exits (``dncnn``), the stopping policy (``policy``) and the exits after which
    the policy may stop (``stop_layers``)."""

    def __init__(self, depth: int, width: int, channels: int, exits: list[int], head: str, hidden: int,
                 position_dim: int):
        super().__init__(len(exits) + 1)
        self.dncnn = DnCNN(depth, width, channels, exits, head)
        self.policy = ImageStopPolicy(channels, hidden, len(exits) + 1, position_dim)
        self.bounds = [0] + exits + [depth - 1]  # exit t (0-based) reads layer bounds[t + 1]

    @property
    def predictive(self) -> DnCNN:
        return self.dncnn


class DnCNNStop(PatchTraining, LearnedStopping):
    """DnCNN with a learned stopping policy (``denoising`` family), blind.

    Hyper-parameters (see ``l2obench list``): those of ``dncnn`` and ``exit_every``,
    ``head``, ``beta``, ``layer_cost``, ``warm_start``, ``policy_hidden``, ``head_steps``, ``stage1_steps``,
    ``policy_lr``,
    ``policy_steps``, ``hard_oracle``, ``finetune_steps``, ``support_mass``, ``stop_rule``,
    ``sample_seed``. Fitted state: ``network_`` (a ``DnCNNStopModel``).
    """

    POSITION_DIM = 8
    INSTANCE_KEYS = ("noisy",)
    label = "DnCNN-stop"

    @property
    def exits(self) -> list[int]:
        return exit_layers(self.n_layers, self.exit_every)

    @property
    def n_outputs(self) -> int:
        return len(self.exits) + 1

    @property
    def validation_chunk(self) -> int:
        return IMAGE_CHUNK

    def make_network(self, config) -> DnCNNStopModel:
        return DnCNNStopModel(self.n_layers, self.width, config["channels"], self.exits, self.head,
                              self.policy_hidden, self.POSITION_DIM)

    def exit_step(self, t, state, observation):
        bounds = self.network_.bounds
        return self.network_.dncnn.run(observation["noisy"] if state is None else state, bounds[t], bounds[t + 1])

    def exit_output(self, t, state, observation):
        dncnn = self.network_.dncnn
        residual = dncnn.layers[-1](state) if t == self.n_outputs - 1 else dncnn.head(t, state)
        return observation["noisy"] - residual

    def zero_estimate(self, observation):
        return torch.zeros_like(observation["noisy"])

    def layer_logits(self, observation, t, output, state, previous):
        return self.network_.policy(observation["noisy"], output, t)

    def all_logits(self, observation, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Stop logits ``(N, T-1)`` after every exit but the last, in one call over all exits' images."""
        noisy, T = observation["noisy"], len(outputs)
        estimates = torch.cat(outputs[:-1])  # ((T-1) N, C, H, W), exit-major
        exits = torch.arange(T - 1, device=noisy.device).repeat_interleave(len(noisy))
        logits = self.network_.policy(noisy.repeat(T - 1, 1, 1, 1), estimates, exits)
        return logits.view(T - 1, len(noisy)).T

    @property
    def stage1_lr(self) -> float:
        """After the warm start, stage I fine-tunes at a tenth of ``lr`` (the authors: DnCNN at 1e-3,
        then the exits at 1e-4); from scratch, at ``lr``."""
        return self.lr * (FINETUNE_LR_FACTOR if self.warm_start else 1.0)

    def train_network(self, context: FitContext) -> dict:
        self.start_patches(context)
        return super().train_network(context)

    def stage1_schedule(self, loss_fn, validate, context: FitContext) -> list[Stage]:
        """After the warm start, first ``head_steps`` training the exit heads alone at ``lr`` on the sum of
        their losses (deep supervision; the trained layers and their batch normalisation held), early-stopped
        on the same sum on validation; then stage I. Stage I's oracle weighting alone gives a head no
        gradient while the last output is best on every image, as it is after the warm start, and its
        tenth of ``lr`` leaves the heads, which start at zero, near the noisy input."""
        stages = super().stage1_schedule(loss_fn, validate, context)
        if not (self.warm_start and self.head_steps):
            return stages
        problem, dncnn = context.problem, self.network_.dncnn

        def exit_losses(part) -> torch.Tensor:  # (N,): the exits' losses summed, the last output left out
            heads = self.forward(part.observation(), depth=self.n_outputs - 1)  # not computing the last layers
            return torch.stack([problem.loss(x, part.target) for x in heads]).sum(0)

        def heads_loss(batch) -> torch.Tensor:
            dncnn.layers.eval()  # the trained layers' batch normalisation statistics stay as they are
            return exit_losses(self.training_batch(batch)).mean()

        heads = Stage(heads_loss, lambda: split_mean(context.val, exit_losses, IMAGE_CHUNK), self.lr,
                      list(dncnn.heads.parameters()), f"{self.label} exit heads (T={self.n_outputs})",
                      steps=self.head_steps)
        return [heads, *stages]

    def warm_start_network(self, context: FitContext) -> list[dict]:
        """DnCNN's training (its last output, random patches) before stage I."""
        return self.train_last_output(context, f"{self.label} warm start (DnCNN)")

    def solve(self, observation, trajectory: bool = False) -> Solution:
        return solve_in_chunks(lambda part: LearnedStopping.solve(self, part, trajectory), observation)
