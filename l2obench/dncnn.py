"""DnCNN (Zhang, Zuo, Chen, Meng & Zhang 2017; thesis 5.5.3): the denoising network, with optional exits.

``depth`` layers: a 3 x 3 convolution and ReLU, ``depth - 2`` times a 3 x 3
convolution, batch normalisation and ReLU, and a last 3 x 3 convolution back to
the image's channels. The network predicts the noise (residual learning): the
denoised image is ``noisy - DnCNN(noisy)``.

An exit after layer ``l`` (1-based, ``l <= depth - 2``) is a head reading that
layer's features and predicting the noise too, as in the authors' DnCNN-stop
code (``DnCNN_DS``: a 3 x 3 convolution, batch normalisation, ReLU and a 3 x 3
convolution to the image's channels, ``head = "block"``), or a single 3 x 3
convolution (``head = "conv"``, a few percent of a layer's cost). The last
convolution of the network and of every head starts at zero, so that the
untrained network returns the noisy image; the others start from He's
initialisation (fan in), as the authors' ``weights_init_kaiming``.

Shared by the DnCNN and DnCNN-stop solvers, and by the small networks of the
unrolled quadratic-energy denoiser.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["DnCNN", "HEADS", "exit_layers"]

HEADS = ("block", "conv")
KERNEL = 3


def _conv(c_in: int, c_out: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, KERNEL, padding=KERNEL // 2, bias=bias)


def exit_layers(depth: int, every: int = 1) -> list[int]:
    """The layers (1-based) with an exit: ``every``-th of ``1 .. depth - 2`` from layer 1 (the authors'
    ``DnCNN_DS``: every layer below 27 layers, every other one above)."""
    return list(range(1, depth - 1, every))


class DnCNN(nn.Module):
    """DnCNN's noise predictor (module docstring).

    Parameters
    ----------
    depth : int
        Layers (thesis and paper: 17 or 20), at least 3.
    width : int
        Channels of the hidden layers (paper: 64).
    channels : int
        Image channels (1: grayscale).
    exits : sequence of int
        Layers (1-based, at most ``depth - 2``) after which a head predicts the noise.
    head : {"block", "conv"}
        The heads' architecture.
    """

    def __init__(self, depth: int = 17, width: int = 64, channels: int = 1, exits: Sequence[int] = (),
                 head: str = "block"):
        super().__init__()
        if depth < 3:
            raise ValueError(f"DnCNN needs at least 3 layers, got {depth}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if any(not 1 <= layer <= depth - 2 for layer in exits):
            raise ValueError(f"exits must lie in 1 .. depth - 2 = {depth - 2}, got {list(exits)}")
        self.exits = [int(layer) for layer in exits]
        self.layers = nn.ModuleList(
            [nn.Sequential(_conv(channels, width, True), nn.ReLU(inplace=True))]
            + [nn.Sequential(_conv(width, width, False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
               for _ in range(depth - 2)]
            + [_conv(width, channels, False)])
        self.heads = nn.ModuleList(
            nn.Sequential(_conv(width, width, False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                          _conv(width, channels, False)) if head == "block" else _conv(width, channels, False)
            for _ in self.exits)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for last in [self.layers[-1]] + [h[-1] if isinstance(h, nn.Sequential) else h for h in self.heads]:
            nn.init.zeros_(last.weight)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def run(self, h: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Layers ``start + 1 .. stop`` (1-based) on the features ``h`` after layer ``start``
        (the image for ``start = 0``)."""
        for layer in self.layers[start:stop]:
            h = layer(h)
        return h

    def head(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """The noise predicted by exit ``k`` (0-based) from the features of its layer."""
        return self.heads[k](h)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """The predicted noise ``(N, C, H, W)`` of the last layer."""
        return self.run(noisy, 0, self.depth)
