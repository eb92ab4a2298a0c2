"""Classical image denoisers: wavelet soft-thresholding, total variation and BM3D.

Each calls a library of the field on the ``denoising`` family's observation
(``noisy`` ``(N, 1, H, W)``, ``sigma`` ``(N,)`` in intensity units):

* ``WaveletDenoiser``: soft-thresholding of the detail coefficients of an
  orthogonal wavelet transform (PyWavelets), threshold ``tau sigma``. With
  ``mode = "periodization"`` the transform is orthonormal, so this is the closed
  form of the sparse coding problem ``min_c 0.5 ||y - W^T c||^2 + tau sigma
  ||c_detail||_1`` (coefficient by coefficient, no iterations); optional cycle
  spinning (Coifman & Donoho 1995) averages it over circular shifts. Batched: one
  transform over all images (``axes = (-2, -1)``).
* ``TVDenoiser``: scikit-image's ``denoise_tv_chambolle`` (Chambolle 2004),
  ``min_u weight TV(u) + 0.5 ||u - y||^2`` with ``weight = w sigma``, per image.
* ``BM3DDenoiser``: ``bm3d.bm3d(noisy, sigma_psd = sigma)`` (Makinen, Azzari & Foi
  2020, the reference implementation on PyPI), per image.

They are non-blind: the thesis (5.5.3) gives BM3D the noise level, and so do
these solvers with ``noise_level = "given"``, reading ``sigma`` from the
observation. With ``noise_level = "estimated"`` they are blind: sigma is
estimated per image from the noisy image alone (scikit-image's
``estimate_sigma``, the median absolute deviation of the finest diagonal
wavelet coefficients, Donoho & Johnstone 1994) and exposed as
``extras["sigma"]``, which the family scores as ``sigma_error``.

The multipliers ``tau`` and ``w`` are tuned on validation (``l2obench.tuning``)
per noise level: the validation images are split by their sigma at
``level_edges`` (default 20, 30, 40, 50 / 255: one bin around each test level
15 .. 55, the last open above, so that noise levels beyond training use the
highest bin's), and each bin keeps the grid point of its lowest validation loss;
at solve time each image takes its bin's point, by the sigma the solver sees
(given, or estimated when blind). The grid is evaluated once on all validation
images, so this costs what one multiplier for all levels costs. A bin without
validation images takes that one multiplier. An image with sigma 0 is returned
unchanged.

Parallelism over images, measured on a 2-core CPU (2026-12-01): two Python
threads made ``denoise_tv_chambolle`` slower on 64 x 64 images (1.3 -> 2.7 ms
per image; it holds the GIL) and no faster on 180 x 180 (6.4 ms); ``bm3d``
aborts when called from two threads at once (its C++ thread pool is global) and
runs its own threads inside one call (``threads``); it also spends about 0.35 s
per call whatever the image size (16 x 16 to 64 x 64). So TV and BM3D loop over
images in one thread and the wavelet denoiser is batched in numpy.
"""
from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from l2obench.contracts import Solution
from l2obench.tuning import ClassicalSolver

# bm3d 4.0.3 crashed (segmentation fault) on an 8 x 8 image and ran on 16 x 16 (measured).
BM3D_MIN_SIZE = 16


def _images(observation: Mapping[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    noisy = observation["noisy"]
    if noisy.dim() != 4 or noisy.shape[1] != 1:
        raise ValueError(f"expected noisy grayscale images (N, 1, H, W), got shape {tuple(noisy.shape)}")
    return noisy, noisy[:, 0].detach().cpu().double().numpy()


def estimated_sigma(images: np.ndarray) -> np.ndarray:
    """Noise standard deviation of each image ``(N, H, W)`` from the image alone (scikit-image's ``estimate_sigma``)."""
    from skimage.restoration import estimate_sigma

    return np.array([estimate_sigma(image) for image in images], dtype=np.float64)


class ClassicalDenoiser(ClassicalSolver):
    """A denoiser of the ``denoising`` family computed in numpy by a library; see the module docstring.

    Subclasses implement ``denoise(images, sigma)``: ``(N, H, W)`` float64 images and their
    noise levels ``(N,)`` (intensity units) to the denoised ``(N, H, W)``.
    """

    def denoise(self, images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def side_information(self) -> tuple[str, ...]:
        """``("sigma",)`` when non-blind (``noise_level = "given"``): the runner hides it otherwise."""
        return ("sigma",) if self.noise_level == "given" else ()

    def noise_levels(self, observation: Mapping[str, Any], images: np.ndarray) -> np.ndarray:
        """Each image's sigma as the solver sees it: given in the observation, or estimated."""
        if self.noise_level == "estimated":
            return estimated_sigma(images)
        if "sigma" not in observation:
            raise KeyError(f"{type(self).__name__} is non-blind (noise_level = 'given'): it needs the noise level "
                           "'sigma' in the observation; use noise_level = 'estimated' to estimate it")
        return observation["sigma"].detach().cpu().double().numpy()

    def level_bins(self, sigma: np.ndarray) -> np.ndarray:
        """Each image's noise-level bin (0 .. len(level_edges)) by ``level_edges`` (units of 1/255)."""
        edges = np.asarray(self.level_edges, dtype=np.float64)
        if np.any(np.diff(edges) <= 0):
            raise ValueError(f"level_edges must increase, got {list(self.level_edges)}")
        return np.digitize(sigma * 255, edges)

    def choose(self, points, losses, observation) -> list[dict]:
        """The tuning of ``ClassicalSolver`` (the point for all levels), then each bin's own point;
        the table gains one row per bin and point (``level``: the bin's sigma range)."""
        self.levels_ = []
        table = super().choose(points, losses, observation)
        if not self.level_edges:
            return table
        overall = self.get_params()
        bins = self.level_bins(self.noise_levels(observation, _images(observation)[1]))
        edges = [0.0, *self.level_edges, math.inf]
        per_image = torch.stack([loss.detach().double().cpu() for loss in losses]).numpy()  # (points, N)
        for b in range(len(edges) - 1):
            members = bins == b
            totals = per_image[:, members].sum(1)
            table += [{**point, "level": f"[{edges[b]:g}, {edges[b + 1]:g})/255", "val_loss": float(total)}
                      for point, total in zip(points, totals)]
            finite = np.isfinite(totals)
            if not members.any() or not finite.any():
                self.levels_.append({name: overall[name] for name in points[0]})
            else:
                self.levels_.append(points[int(np.argmin(np.where(finite, totals, np.inf)))])
        return table

    def solve(self, observation, trajectory=False) -> Solution:
        noisy, images = _images(observation)
        sigma = self.noise_levels(observation, images)
        extras = {"sigma": torch.from_numpy(sigma).to(noisy.device, noisy.dtype)} \
            if self.noise_level == "estimated" else {}
        out = images.copy()
        levels = getattr(self, "levels_", [])
        bins = self.level_bins(sigma) if levels else np.zeros(len(sigma), dtype=int)
        for b, point in enumerate(levels or [{}]):
            rows = np.flatnonzero((sigma > 0) & (bins == b))
            if len(rows):
                with self.params_set(point):
                    out[rows] = self.denoise(images[rows], sigma[rows])
        estimate = torch.from_numpy(out).to(noisy.device, noisy.dtype).unsqueeze(1)
        return Solution(estimate, extras=extras)

    @contextmanager
    def params_set(self, point: Mapping[str, Any]) -> Iterator[None]:
        """The hyper-parameters ``point`` for the block, then the previous ones again."""
        previous = {name: getattr(self, name) for name in point}
        self.set_params(**point)
        try:
            yield
        finally:
            self.set_params(**previous)

    def state_dict(self) -> dict[str, Any]:
        """``ClassicalSolver``'s state and the points tuned per noise level."""
        return {**super().state_dict(), "levels": [dict(point) for point in getattr(self, "levels_", [])]}

    def load_state_dict(self, state: Mapping[str, Any]) -> "ClassicalDenoiser":
        super().load_state_dict(state)
        self.levels_ = [dict(point) for point in state.get("levels", [])]
        return self


class WaveletDenoiser(ClassicalDenoiser):
    """Soft-thresholding in an orthogonal wavelet basis, threshold ``tau sigma``, optional cycle spinning.

    Hyper-parameters: ``tau``, ``wavelet``, ``levels``, ``mode``, ``shifts``, ``noise_level``.
    """

    def threshold(self, images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """One pass: transform, soft-threshold the detail coefficients at ``tau sigma_i``, invert."""
        import pywt

        height, width = images.shape[-2:]
        wavelet = pywt.Wavelet(self.wavelet)
        levels = max(1, min(int(self.levels), pywt.dwt_max_level(min(height, width), wavelet.dec_len)))
        coeffs = pywt.wavedec2(images, wavelet, mode=self.mode, level=levels, axes=(-2, -1))
        t = (self.tau * sigma)[:, None, None]
        soft = [coeffs[0]] + [tuple(np.sign(d) * np.maximum(np.abs(d) - t, 0.0) for d in detail)
                              for detail in coeffs[1:]]
        return pywt.waverec2(soft, wavelet, mode=self.mode, axes=(-2, -1))[..., :height, :width]

    def denoise(self, images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        k = int(self.shifts)
        if k == 1:
            return self.threshold(images, sigma)
        out = np.zeros_like(images)
        for shift in itertools.product(range(k), repeat=2):
            rolled = np.roll(images, shift, axis=(-2, -1))
            out += np.roll(self.threshold(rolled, sigma), (-shift[0], -shift[1]), axis=(-2, -1))
        return out / k**2


class TVDenoiser(ClassicalDenoiser):
    """Total-variation denoising by scikit-image's Chambolle algorithm, ``weight = w sigma``, per image.

    Hyper-parameters: ``weight`` (``w``), ``eps``, ``max_iter``, ``noise_level``.
    """

    def denoise(self, images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_tv_chambolle

        return np.stack([denoise_tv_chambolle(image, weight=self.weight * s, eps=self.eps,
                                              max_num_iter=int(self.max_iter))
                         for image, s in zip(images, sigma)])


class BM3DDenoiser(ClassicalDenoiser):
    """BM3D by the ``bm3d`` package (``sigma_psd = sigma_scale * sigma``), per image.

    Hyper-parameters: ``sigma_scale``, ``profile``, ``threads``, ``noise_level``.
    """

    def denoise(self, images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        if min(images.shape[-2:]) < BM3D_MIN_SIZE:  # smaller images crash the bm4d library (segmentation fault)
            raise ValueError(f"bm3d needs images of at least {BM3D_MIN_SIZE} x {BM3D_MIN_SIZE} pixels, got "
                             f"{images.shape[-2]} x {images.shape[-1]}")
        try:
            import bm3d
        except ImportError as exc:  # pragma: no cover - bm3d is a dependency
            raise ImportError("the bm3d solver needs the bm3d package: pip install bm3d") from exc
        profile = {"np": bm3d.BM3DProfile, "refilter": bm3d.BM3DProfileRefilter, "vn": bm3d.BM3DProfileVN,
                   "high": bm3d.BM3DProfileHigh}[self.profile]()
        profile.num_threads = int(self.threads)
        return np.stack([bm3d.bm3d(image, sigma_psd=self.sigma_scale * s, profile=profile)
                         for image, s in zip(images, sigma)])
