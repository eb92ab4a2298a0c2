"""Training and solving on images: random patches, flips and rotations, chunked solves.

Shared by the learned denoisers (DnCNN, DnCNN-stop, the unrolled quadratic-energy
denoiser): ``PatchTraining`` gives a solver whose observation holds ``noisy`` and
whose target holds ``clean`` (the ``denoising`` family) training batches of
random ``patch x patch`` crops of the batch's images (DnCNN's 40 x 40 / 50 x 50
patches) under one of the 8 flips and rotations of the square (its
augmentation), from a generator seeded by the cell's seed; ``solve_in_chunks``
bounds the memory of a solve on a large test split.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from l2obench.contracts import FitContext, Instances, Solution
from l2obench.learned import mean_loss
from l2obench.training import decayed_stages, train_stages

__all__ = ["IMAGE_CHUNK", "PatchTraining", "dihedral", "random_patches", "solve_in_chunks"]

# Images per forward pass when solving or validating (activations: IMAGE_CHUNK x width x H x W floats).
IMAGE_CHUNK = 32


def random_patches(images: list[torch.Tensor], size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The same random ``size x size`` crop of each ``(N, C, H, W)`` tensor of ``images`` (one position
    per image, uniform, drawn from ``generator``); the images themselves when ``size`` is not smaller."""
    N, _, H, W = images[0].shape
    if size >= H and size >= W:
        return images
    top = torch.randint(H - min(size, H) + 1, (N,), generator=generator).to(images[0].device)
    left = torch.randint(W - min(size, W) + 1, (N,), generator=generator).to(images[0].device)
    offsets = torch.arange(min(size, H), device=images[0].device)
    rows = (top[:, None] + offsets)[:, :, None]  # (N, size, 1)
    cols = (left[:, None] + torch.arange(min(size, W), device=images[0].device))[:, None, :]  # (N, 1, size)
    index = torch.arange(N, device=images[0].device)[:, None, None]
    return [x[index, :, rows, cols].permute(0, 3, 1, 2) for x in images]  # (N, size, size, C) -> (N, C, ..)


def dihedral(images: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Transform ``k`` (0..7) of the square's 8 symmetries: ``k % 4`` quarter turns, then a flip if ``k >= 4``."""
    out = [torch.rot90(x, k % 4, dims=(-2, -1)) for x in images]
    return [torch.flip(x, dims=(-1,)) for x in out] if k >= 4 else out


class PatchTraining:
    """Mixin of a ``LearnedSolver`` on images: the network config (the image channels), training on
    random patches under random flips and rotations (hyper-parameters ``patch``, ``augment``;
    observation ``noisy``, target ``clean``), and validation in chunks of ``IMAGE_CHUNK`` images."""

    def network_config(self, context: FitContext) -> dict:
        """The image channels (the network's input and output)."""
        return {"channels": int(context.train.observed["noisy"].shape[1])}

    def start_patches(self, context: FitContext) -> None:
        """Seed the patch generator from the cell's seed (called before training)."""
        self._patches = torch.Generator().manual_seed(context.seed)

    def training_batch(self, batch: Instances) -> Instances:
        """``batch`` cut to random patches (the same crop of each noisy image and its clean image), under
        one random symmetry of the square."""
        noisy, clean = batch.observed["noisy"], batch.target["clean"]
        if self.patch:
            noisy, clean = random_patches([noisy, clean], int(self.patch), self._patches)
        if self.augment:
            noisy, clean = dihedral([noisy, clean], int(torch.randint(8, (1,), generator=self._patches)))
        return Instances(observed={"noisy": noisy}, target={**batch.target, "clean": clean}, shared=batch.shared)

    def last_output(self, observation: Mapping[str, Any]) -> torch.Tensor:
        """The network's final estimate (``forward``'s last output)."""
        return self.forward(observation, keep_all=False)[-1]

    def validation_score(self, context: FitContext) -> float:
        """The mean family loss of the final estimate on the validation split, in chunks of images."""
        return mean_loss(context.problem, self.last_output, context.val, IMAGE_CHUNK)

    def train_last_output(self, context: FitContext, desc: str) -> list[dict]:
        """Adam on the family's loss of the final estimate of random patches, then the learning-rate
        decay stages (``lr``, ``lr_decays``), each early-stopped on ``validation_score``."""
        problem = context.problem

        def loss(batch) -> torch.Tensor:
            batch = self.training_batch(batch)
            return problem.loss(self.last_output(batch.observation()), batch.target).mean()

        stages = decayed_stages(loss, lambda: self.validation_score(context), self.lr, self.decays(), desc=desc)
        return train_stages(self.network_, stages, context, self.fresh_samples)


def solve_in_chunks(solve: Callable[[dict[str, Any]], Solution], observation: Mapping[str, Any],
                    chunk: int = IMAGE_CHUNK) -> Solution:
    """``solve`` on chunks of ``chunk`` images of ``observation["noisy"]``, the solutions concatenated."""
    noisy = observation["noisy"]
    if len(noisy) <= chunk:
        return solve(dict(observation))
    parts = [solve({**observation, "noisy": noisy[start:start + chunk]}) for start in range(0, len(noisy), chunk)]

    def cat(values):
        return None if values[0] is None else torch.cat(values)

    trajectory = None if parts[0].trajectory is None else [
        torch.cat(points) for points in zip(*(part.trajectory for part in parts))]
    return Solution(cat([p.estimate for p in parts]), trajectory, cat([p.iterations for p in parts]),
                    cat([p.stop_distribution for p in parts]))
