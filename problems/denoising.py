"""Grayscale image denoising (the ``denoising`` family, thesis 5.5.3, NeurIPS 2020 section 7.2).

Clean images are ``crop x crop`` crops with values in [0, 1] from one of three
sources (the setting ``source``):

* ``dead_leaves``: the dead-leaves model, random occluding discs with radius
  density proportional to ``r^-3`` on ``[rmin, rmax]`` (pixels) and uniform grey
  levels, a scale-invariant stand-in for natural images; generated offline,
  any count, reproducible from the split's seed stream (``dead_leaves``);
* ``folder``: a user's images (e.g. BSD400 / BSD68) under ``path/train`` and
  ``path/test`` (and ``path/val`` if present; else validation crops come from
  the training images), png / jpg / bmp / tif, read as grayscale floats;
* ``skimage``: the photographs scikit-image ships inside its package
  (``TRAIN_IMAGES`` for training and validation, ``TEST_IMAGES`` for test).

For the last two, every instance is a crop at a uniformly random position of a
uniformly random image of the split's pool.

Noise. Training and validation draw sigma uniformly in ``train_sigma`` (blind
training, thesis 5.5.3: sigma <= 55); the test split holds the levels
``test_sigma`` in equal numbers and the out-of-distribution split ``ood`` the
levels ``ood_sigma`` (thesis Table 5.6: 65 and 75, unseen in training), each
reported per level (subset ``sigma=25``, ...). Levels are in 8-bit grey levels
(``sigma = 25`` adds noise of standard deviation 25 / 255). ``noise =
"gaussian"`` adds i.i.d. N(0, sigma^2) noise; ``"adaptive"`` is the locally
adaptive noise of the NeurIPS paper (section 7.2: "noise levels on edges lower
than non-edge regions"): per pixel ``sigma * (1 - (1 - edge_noise) e)`` with
``e`` in [0, 1) the edge strength of the clean image (``edge_strength``).

Observation: ``noisy`` ``(N, 1, H, W)`` and ``sigma`` ``(N,)``, the nominal noise
level of each image in intensity units (level / 255; for adaptive noise, the
level of flat regions). ``sigma`` is side information for non-blind solvers
only, such as the classical denoisers (BM3D is given the noise level in thesis
5.5.3), which declare it (``Solver.side_information``); the runner hides it from
every other solver, so a blind one (DnCNN, thesis 5.5.3) sees ``noisy`` alone
(``blind_observation``).
Target: ``clean`` ``(N, 1, H, W)``.

Metrics: ``psnr`` (dB, data range 1, the mean over images as in thesis Table
5.6) and ``ssim`` (scikit-image's ``structural_similarity``, data range 1),
overall and per noise level; ``mse`` (linear, per pixel) over the split, the
metric of the generalization gap. A solution carrying a blind solver's noise
level estimate ``extras["sigma"]`` (``(N,)``, intensity units) is also scored
by ``sigma_error``, the mean ``|sigma_hat - sigma|`` in grey levels.
"""
from __future__ import annotations

import functools
import hashlib
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from l2obench.contracts import Instances, Measurement, Metric, ProblemFamily
from l2obench.errors import InvalidEstimateError
from l2obench_problems.levels import as_levels, checked_split_sizes, level_index, per_level

PSNR = Metric("psnr", "higher", "dB", "mean over images of 10 log10(1 / MSE), data range 1 (thesis Table 5.6)")
SSIM = Metric("ssim", "higher", "", "mean structural similarity (scikit-image, data range 1, 7 x 7 window)")
MSE = Metric("mse", "lower", "", "mean squared error per pixel over the split (linear)")
SIGMA_ERROR = Metric("sigma_error", "lower", "/255",
                     "mean |sigma_hat - sigma| of a solver's noise level estimate (extras['sigma']), grey levels")

SOURCES = ("dead_leaves", "folder", "skimage")
NOISES = ("gaussian", "adaptive")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# scikit-image's bundled photographs (no download), at least 300 pixels on each side.
TRAIN_IMAGES = ("astronaut", "brick", "chelsea", "coffee", "grass", "gravel", "moon", "rocket")
TEST_IMAGES = ("camera", "coins", "clock")
# Edge strength e = 1 - exp(-|grad G_1 * x| / EDGE_SCALE): the gradient magnitude (central
# differences) of the clean image smoothed by a Gaussian of one pixel; a step of contrast 0.25
# gives |grad| of about 0.1 and e of about 0.86, flat regions e = 0.
EDGE_SCALE = 0.05
GREY = 255.0


def sigma_label(level: float) -> str:
    """Subset name of a noise level in grey levels, e.g. ``"sigma=25"``."""
    return f"sigma={level:g}"


def blind_observation(observation: Mapping[str, Any]) -> dict[str, Any]:
    """What a blind solver reads of an observation: all of it less the family's side information
    (``Denoising.side_information``: the noise level ``sigma``), as the runner hides it
    (``l2obench.contracts.Instances.hiding``)."""
    return {key: value for key, value in observation.items() if key not in Denoising.side_information}


# -- clean images ---------------------------------------------------------------------------

def _disc_radii(n: int, rng: np.random.Generator, rmin: float, rmax: float) -> np.ndarray:
    """``n`` radii with density proportional to ``r^-3`` on ``[rmin, rmax]`` (inverse CDF)."""
    u = rng.random(n)
    return (rmin**-2 - u * (rmin**-2 - rmax**-2)) ** -0.5


def dead_leaves_image(size: int, rng: np.random.Generator, rmin: float, rmax: float,
                      block: int = 256, max_discs: int = 1_000_000) -> np.ndarray:
    """One ``size x size`` dead-leaves image (float32 in [0, 1]).

    Discs of a Poisson process in the plane fall one on another; the image shows, at
    each pixel, the grey level of the first (front-most) disc covering it. Discs are
    drawn front to back and each paints the pixels still uncovered, until none is left.
    Only discs that reach the window matter: their radius density is ``r^-3`` tilted by
    the area ``(size + 2 r)^2`` of centres within ``r`` of the window, sampled by
    rejection; their centres are uniform on ``[-r, size + r]^2``.
    """
    image = np.zeros((size, size), dtype=np.float32)
    free = np.ones((size, size), dtype=bool)
    centres = np.arange(size) + 0.5
    drawn = 0
    while drawn < max_discs:
        r = _disc_radii(block, rng, rmin, rmax)
        r = r[rng.random(block) < ((size + 2 * r) / (size + 2 * rmax)) ** 2]
        cx, cy = (rng.random((2, len(r))) * (size + 2 * r) - r)
        grey = rng.random(len(r)).astype(np.float32)
        for k in range(len(r)):
            x0, x1 = max(int(cx[k] - r[k]), 0), min(int(cx[k] + r[k]) + 1, size)
            y0, y1 = max(int(cy[k] - r[k]), 0), min(int(cy[k] + r[k]) + 1, size)
            if x0 >= x1 or y0 >= y1:
                continue
            window = free[y0:y1, x0:x1]
            hit = ((centres[y0:y1, None] - cy[k]) ** 2 + (centres[None, x0:x1] - cx[k]) ** 2 <= r[k] ** 2) & window
            image[y0:y1, x0:x1][hit] = grey[k]
            window &= ~hit
        drawn += block
        if not free.any():
            break
    return image


def dead_leaves(n: int, size: int, rng: np.random.Generator, rmin: float, rmax: float) -> np.ndarray:
    """``n`` dead-leaves images ``(n, size, size)`` (float32 in [0, 1]), see ``dead_leaves_image``."""
    return np.stack([dead_leaves_image(size, rng, rmin, rmax) for _ in range(n)]) if n else \
        np.zeros((0, size, size), dtype=np.float32)


def as_gray(image: np.ndarray) -> np.ndarray:
    """A grayscale float64 image in [0, 1] from a grey, RGB or RGBA array of any integer or float type."""
    from skimage import color, util

    image = util.img_as_float(np.asarray(image))
    if image.ndim == 3:
        image = color.rgb2gray(image[..., :3] if image.shape[-1] == 4 else image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey or an RGB(A) image, got shape {image.shape}")
    return np.clip(image, 0.0, 1.0)


def image_files(folder: Path) -> list[Path]:
    """Image files (by suffix, ``IMAGE_SUFFIXES``) directly under ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_subsets(path: str | Path) -> dict[str, list[Path]]:
    """The image files of a folder's ``train``, ``test`` and (optional) ``val`` subfolders.

    Raises
    ------
    ValueError
        If ``path`` or its ``train`` / ``test`` subfolder is missing or holds no image.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"path {str(path)!r} is not a folder (expected train/ and test/ subfolders of images)")
    out = {}
    for name in ("train", "test", "val"):
        folder = root / name
        if not folder.is_dir():
            if name == "val":
                continue
            raise ValueError(f"path {str(path)!r} has no {name}/ subfolder (expected train/ and test/ "
                             "subfolders of images)")
        files = image_files(folder)
        if not files:
            raise ValueError(f"{folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        out[name] = files
    return out


def load_image(path: Path) -> np.ndarray:
    """An image file as a grayscale float64 array in [0, 1]."""
    from skimage import io

    return as_gray(io.imread(path))


@functools.lru_cache(maxsize=None)
def skimage_image(name: str) -> np.ndarray:
    """One of scikit-image's bundled images (``skimage.data.<name>``) in grayscale [0, 1] (read once per
    process; do not modify it in place)."""
    from skimage import data

    image = as_gray(getattr(data, name)())
    image.flags.writeable = False
    return image


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header (Pillow; scikit-image's reader otherwise)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            return height, width
    except (UnidentifiedImageError, OSError):
        return load_image(path).shape[:2]


def random_crops(images: Sequence[np.ndarray], n: int, crop: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` crops ``(n, crop, crop)`` (float32) at uniform positions of uniformly drawn ``images``."""
    out = np.empty((n, crop, crop), dtype=np.float32)
    which = rng.integers(len(images), size=n)
    for i, k in enumerate(which):
        h, w = images[k].shape
        top, left = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        out[i] = images[k][top:top + crop, left:left + crop]
    return out


# -- noise -------------------------------------------------------------------------------------

def _gaussian_blur(images: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    radius = int(math.ceil(3 * std))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (t / std) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))


def edge_strength(clean: torch.Tensor) -> torch.Tensor:
    """Edge strength ``e = 1 - exp(-|grad (G_1 * x)| / EDGE_SCALE)`` in [0, 1), per pixel of ``(N, 1, H, W)``.

    0 in flat regions, near 1 on edges (``EDGE_SCALE``); it sets where the locally
    adaptive noise of NeurIPS 2020 section 7.2 is lower.
    """
    smooth = F.pad(_gaussian_blur(clean), (1, 1, 1, 1), mode="replicate")
    gx = (smooth[..., 1:-1, 2:] - smooth[..., 1:-1, :-2]) / 2
    gy = (smooth[..., 2:, 1:-1] - smooth[..., :-2, 1:-1]) / 2
    return 1 - torch.exp(-torch.sqrt(gx**2 + gy**2) / EDGE_SCALE)


def noise_std(clean: torch.Tensor, sigma: torch.Tensor, noise: str, edge_noise: float) -> torch.Tensor:
    """Per-pixel noise standard deviation ``(N, 1, H, W)`` for nominal levels ``sigma`` ``(N,)``.

    ``gaussian``: ``sigma`` everywhere; ``adaptive``: ``sigma (1 - (1 - edge_noise) e)``, ``e`` the
    ``edge_strength`` of the clean image (lower noise on edges, NeurIPS 2020 section 7.2).
    """
    level = sigma.view(-1, 1, 1, 1).to(clean.dtype)
    if noise == "gaussian":
        return level.expand_as(clean)
    return level * (1 - (1 - edge_noise) * edge_strength(clean))


# -- metrics -----------------------------------------------------------------------------------

def png(image: torch.Tensor) -> bytes:
    """A grayscale image ``(1, H, W)`` or ``(H, W)`` in [0, 1] as 8-bit PNG bytes (clipped to [0, 1])."""
    from PIL import Image

    pixels = (image.detach().double().cpu().clamp(0, 1).squeeze(0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # uint8 (H, W): 8-bit grayscale
    return buffer.getvalue()


def _check_shapes(estimate: torch.Tensor, clean: torch.Tensor) -> None:
    if estimate.shape != clean.shape:
        raise InvalidEstimateError(f"estimate of shape {tuple(estimate.shape)} does not match the clean images "
                                   f"{tuple(clean.shape)} (N, 1, H, W)")


def mse(estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image ``(N,)``."""
    _check_shapes(estimate, clean)
    return (estimate - clean).pow(2).flatten(1).mean(1)


def psnr(estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """PSNR per image in dB, ``10 log10(1 / MSE)`` (data range 1; float64, ``inf`` where exact)."""
    return -10 * torch.log10(mse(estimate.double(), clean.double()))


def ssim(estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image ``(N,)`` (scikit-image, data range 1, its default 7 x 7 window)."""
    from skimage.metrics import structural_similarity

    _check_shapes(estimate, clean)
    x = estimate.detach().double().cpu().numpy()
    y = clean.detach().double().cpu().numpy()
    return torch.tensor([structural_similarity(a, b, data_range=1.0) for a, b in zip(x[:, 0], y[:, 0])],
                        dtype=torch.float64)


# -- the family --------------------------------------------------------------------------------

def _range(value, name: str) -> tuple[float, float]:
    """A ``[lo, hi]`` setting (or one value, ``lo = hi``), checked ``0 <= lo <= hi``."""
    values = as_levels(value, name)
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not 0 <= values[0] <= values[1]:
        raise ValueError(f"{name} must be [lo, hi] with 0 <= lo <= hi, got {value}")
    return values[0], values[1]


class Denoising(ProblemFamily):
    """Noisy crops of clean grayscale images (module docstring).

    Settings are documented in the registration (``l2obench_problems.DENOISING``).
    """

    metrics = {m.name: m for m in (PSNR, SSIM, MSE, SIGMA_ERROR)}
    primary_metric = "psnr"
    gap_metric = "mse"
    version = "1"
    data_term = None  # the image fidelity 0.5 ||y - x||^2 is not yet in l2obench.datafits
    side_information = ("sigma",)  # the noise level: non-blind solvers only (they declare it)

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {self.noise!r}")
        if int(self.crop) != self.crop or self.crop < 8:
            raise ValueError(f"crop must be an integer >= 8 (SSIM's 7 x 7 window), got {self.crop}")
        self.rmin, self.rmax = _range(self.radius, "radius")
        if self.rmin < 0.5:
            raise ValueError(f"radius must be [rmin, rmax] with rmin >= 0.5 pixels (a disc must be able to cover "
                             f"a pixel), got {self.radius}")
        self.train_range = _range(self.train_sigma, "train_sigma")
        self.test_levels = as_levels(self.test_sigma, "test_sigma")
        no_ood = self.ood_sigma is None or isinstance(self.ood_sigma, (list, tuple)) and not self.ood_sigma
        self.ood_levels = [] if no_ood else as_levels(self.ood_sigma, "ood_sigma")
        if any(level < 0 for level in self.test_levels + self.ood_levels):
            raise ValueError("noise levels must be >= 0")
        if not 0 <= self.edge_noise <= 1:
            raise ValueError(f"edge_noise must lie in [0, 1], got {self.edge_noise}")
        checked_split_sizes(self)
        self._files: dict[str, list[Path]] = {}
        self._pools: dict[str, list[np.ndarray]] = {}
        if self.source == "folder":
            if not self.path:
                raise ValueError("source = 'folder' needs path, a folder with train/ and test/ subfolders of images")
            self._files = folder_subsets(self.path)
            listing = [(str(p.relative_to(Path(self.path).expanduser())), p.stat().st_size, p.stat().st_mtime_ns)
                       for files in self._files.values() for p in files]
            # The folder's listing is part of the data's identity (the cache key holds the version).
            self.version = f"{Denoising.version}+{hashlib.sha256(repr(listing).encode()).hexdigest()[:16]}"
        elif self.path is not None:
            raise ValueError(f"path is a setting of source = 'folder' only (source is {self.source!r})")
        self._check_image_sizes()

    def _check_image_sizes(self) -> None:
        """Refuse a crop larger than an image it would be cut from, when the suite is planned."""
        if self.source == "folder":
            sizes = {str(p): image_size(p) for files in self._files.values() for p in files}
        elif self.source == "skimage":
            sizes = {name: skimage_image(name).shape for name in TRAIN_IMAGES + TEST_IMAGES}
        else:
            return
        small = [f"{name} ({h} x {w})" for name, (h, w) in sizes.items() if min(h, w) < self.crop]
        if small:
            raise ValueError(f"crop {self.crop} is larger than image(s) {', '.join(small)}")

    def split_sizes(self) -> dict[str, int]:
        sizes = checked_split_sizes(self)
        if self.ood_levels:
            sizes["ood"] = int(self.n_ood) if self.n_ood is not None else sizes["test"]
        return sizes

    def memory_bytes(self) -> int:
        """Per crop the clean and the noisy image (float32) and its noise level."""
        return sum(self.split_sizes().values()) * (8 * int(self.crop) ** 2 + 4)

    def _pool(self, split: str) -> list[np.ndarray]:
        """The images crops of ``split`` come from (folder and skimage sources), loaded once."""
        role = "test" if split in ("test", "ood") else "val" if split == "val" and "val" in self._files else "train"
        if role not in self._pools:
            if self.source == "folder":
                images = [load_image(p) for p in self._files[role]]
            else:
                images = [skimage_image(name) for name in (TEST_IMAGES if role == "test" else TRAIN_IMAGES)]
            self._pools[role] = images
        return self._pools[role]

    def clean_images(self, n: int, rng: np.random.Generator, split: str) -> torch.Tensor:
        """``n`` clean crops ``(n, 1, crop, crop)`` (float32 in [0, 1]) of ``split`` from the source."""
        crop = int(self.crop)
        if self.source == "dead_leaves":
            images = dead_leaves(n, crop, rng, self.rmin, self.rmax)
        else:
            images = random_crops(self._pool(split), n, crop, rng)
        return torch.from_numpy(images).unsqueeze(1)

    def noise_levels(self, n: int, generator: torch.Generator, split: str) -> tuple[torch.Tensor, bool]:
        """Nominal noise levels ``(n,)`` in grey levels, and whether they are discrete levels (reported per level)."""
        if split in ("test", "ood"):
            levels = torch.tensor(self.test_levels if split == "test" else self.ood_levels, dtype=torch.float64)
            return levels[level_index(n, len(levels))], True
        lo, hi = self.train_range
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64), False

    def draw(self, n: int, generator: torch.Generator, shared: Mapping[str, torch.Tensor],
             split: str) -> Instances:
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        clean = self.clean_images(n, rng, split)
        levels, discrete = self.noise_levels(n, generator, split)
        sigma = (levels / GREY).float()
        std = noise_std(clean, sigma, self.noise, float(self.edge_noise))
        noisy = clean + std * torch.randn(clean.shape, generator=generator)
        return Instances(observed={"noisy": noisy, "sigma": sigma}, target={"clean": clean},
                         groups={"sigma": levels} if discrete else {})

    def loss(self, estimate: torch.Tensor, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error per image."""
        return mse(estimate, target["clean"])

    def evaluate(self, estimate: torch.Tensor, instances: Instances,
                 per_subset: bool = True) -> list[Measurement]:
        clean = instances.target["clean"]
        values = {"psnr": psnr(estimate, clean).cpu(), "ssim": ssim(estimate, clean)}

        def measure(mask, subset: str) -> list[Measurement]:
            return [Measurement(name, float(v[mask].mean()), subset) for name, v in values.items()]

        out = measure(slice(None), "all") + [Measurement("mse", float(mse(estimate, clean).double().mean()))]
        if per_subset and "sigma" in instances.groups:
            out += per_level(instances.groups["sigma"].cpu(), sigma_label, measure)
        return out

    def illustrations(self, estimate: torch.Tensor, instances: Instances) -> dict[str, bytes]:
        """The first image of each noise level as PNG files: the estimate (``sigma25_0.png``) and, under
        ``input/``, the noisy and clean images (``sigma25_0_noisy.png``, ``sigma25_0_clean.png``);
        grey levels clipped to [0, 1]. None for splits without discrete levels (train, val)."""
        if "sigma" not in instances.groups:
            return {}
        levels = instances.groups["sigma"].cpu()
        files = {}
        for level in torch.unique(levels).tolist():
            i = int(torch.nonzero(levels == level)[0])
            name = f"sigma{level:g}_{i}"
            files[f"{name}.png"] = png(estimate[i])
            files[f"input/{name}_noisy.png"] = png(instances.observed["noisy"][i])
            files[f"input/{name}_clean.png"] = png(instances.target["clean"][i])
        return files

    def evaluate_extras(self, extras: Mapping[str, Any], instances: Instances,
                        per_subset: bool = True) -> list[Measurement]:
        """``sigma_error`` of a noise level estimate ``extras["sigma"]`` ``(N,)`` (intensity units)."""
        if "sigma" not in extras:
            return []
        error = (extras["sigma"].double().cpu() - instances.observed["sigma"].double().cpu()).abs() * GREY

        def measure(mask, subset: str) -> list[Measurement]:
            return [Measurement("sigma_error", float(error[mask].mean()), subset)]

        out = measure(slice(None), "all")
        if per_subset and "sigma" in instances.groups:
            out += per_level(instances.groups["sigma"].cpu(), sigma_label, measure)
        return out
