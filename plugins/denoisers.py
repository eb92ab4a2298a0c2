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

The multipliers ``tau`` and ``w`` are tuned on validation (``l2obench.tuning``);
since thresholds and weights scale with each image's sigma, one multiplier
serves every noise level. An image with sigma 0 is returned unchanged.

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
from typing import Any, Mapping

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

    def solve(self, observation, trajectory=False) -> Solution:
        noisy, images = _images(observation)
        extras = {}
        if self.noise_level == "estimated":
            sigma = estimated_sigma(images)
            extras["sigma"] = torch.from_numpy(sigma).to(noisy.device, noisy.dtype)
        elif "sigma" in observation:
            sigma = observation["sigma"].detach().cpu().double().numpy()
        else:
            raise KeyError(f"{type(self).__name__} is non-blind (noise_level = 'given'): it needs the noise level "
                           "'sigma' in the observation; use noise_level = 'estimated' to estimate it")
        out = images.copy()
        noisy_ones = np.flatnonzero(sigma > 0)
        if len(noisy_ones):
            out[noisy_ones] = self.denoise(images[noisy_ones], sigma[noisy_ones])
        estimate = torch.from_numpy(out).to(noisy.device, noisy.dtype).unsqueeze(1)
        return Solution(estimate, extras=extras)


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
