"""The denoising family (thesis 5.5.3, NeurIPS 2020 7.2) and its classical denoisers."""
import json
import math
import re
import socket

import numpy as np
import pytest
import torch

from l2obench.contracts import check_estimate
from l2obench.errors import InvalidEstimateError, SuiteFileError
from l2obench.registry import Registry
from l2obench.suites import plan
from l2obench_problems import DENOISING
from l2obench_problems.denoising import (TEST_IMAGES, TRAIN_IMAGES, blind_observation, dead_leaves, edge_strength,
                                         psnr, skimage_image, ssim)

REGISTRY = Registry()
TINY = dict(crop=16, n_train=8, n_val=10, n_test=10, n_ood=4)


def family(**settings):
    return DENOISING.build(**{**TINY, **settings})


def draw(n=10, seed=0, split="test", **settings):
    fam = family(**settings)
    return fam, fam.draw(n, torch.Generator().manual_seed(seed), {}, split)


def solver(name, **params):
    return REGISTRY.solver(name).build("denoising", **params)


def test_registered_with_documented_settings(cli):
    assert REGISTRY.problem("denoising") == DENOISING
    assert all(p.help for p in DENOISING.params.values())
    code, out, _ = cli("list")
    assert code == 0 and "denoising " in out
    for name in ("wavelet", "tv", "bm3d"):
        assert REGISTRY.solver(name).families == ("denoising",) and not REGISTRY.solver(name).learned


def test_dead_leaves_are_reproducible_from_the_seed_and_in_the_unit_range():
    a = dead_leaves(3, 32, np.random.default_rng(5), 2.0, 64.0)
    b = dead_leaves(3, 32, np.random.default_rng(5), 2.0, 64.0)
    c = dead_leaves(3, 32, np.random.default_rng(6), 2.0, 64.0)
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # Piecewise constant: a few dozen grey levels (discs), not one per pixel; every pixel covered.
    assert 3 < len(np.unique(a[0])) < 300


def test_draws_are_deterministic_given_the_seed_with_the_documented_shapes():
    _, a = draw(seed=3, noise="adaptive")
    _, b = draw(seed=3, noise="adaptive")
    _, c = draw(seed=4, noise="adaptive")
    for key, value in a.tensors().items():
        assert torch.equal(value, b.tensors()[key]), key
    assert not torch.equal(a.observed["noisy"], c.observed["noisy"])
    assert a.observed["noisy"].shape == a.target["clean"].shape == (10, 1, 16, 16)
    assert a.observed["sigma"].shape == (10,) and a.observed["noisy"].dtype == torch.float32
    clean = a.target["clean"]
    assert clean.min() >= 0 and clean.max() <= 1
    assert "clean" not in a.observation() and set(blind_observation(a.observation())) == {"noisy"}


def test_noise_levels_per_split():
    fam, test = draw(n=50, crop=32)
    levels = test.groups["sigma"]
    assert sorted(set(levels.tolist())) == [15, 25, 35, 45, 55]
    assert torch.bincount(levels.long())[[15, 25, 35, 45, 55]].tolist() == [10] * 5  # equal counts
    torch.testing.assert_close(test.observed["sigma"], (levels / 255).float())
    residual_std = (test.observed["noisy"] - test.target["clean"]).flatten(1).std(1)
    torch.testing.assert_close(residual_std, test.observed["sigma"], rtol=0.1, atol=0)
    train = fam.draw(200, torch.Generator().manual_seed(1), {}, "train")
    assert train.groups == {}  # continuous levels: not reported per level
    sigma = train.observed["sigma"] * 255
    assert sigma.min() >= 0 and sigma.max() <= 55 and sigma.std() > 10
    ood = fam.draw(8, torch.Generator().manual_seed(2), {}, "ood")
    assert sorted(set(ood.groups["sigma"].tolist())) == [65, 75]
    assert fam.split_sizes() == {"train": 8, "val": 10, "test": 10, "ood": 4}
    assert "ood" not in family(ood_sigma=None).split_sizes() and "ood" not in family(ood_sigma=[]).split_sizes()
    assert family(n_ood=None).split_sizes()["ood"] == 10


def test_adaptive_noise_is_lower_on_edges_than_in_flat_regions():
    fam, inst = draw(n=20, crop=64, noise="adaptive", test_sigma=[50], edge_noise=0.3)
    clean = inst.target["clean"]
    residual = inst.observed["noisy"] - clean
    e = edge_strength(clean)
    flat, edges = residual[e < 0.05], residual[e > 0.9]
    assert flat.numel() > 1000 and edges.numel() > 1000
    assert float(flat.std()) == pytest.approx(50 / 255, rel=0.05)
    assert edges.std() < 0.45 * flat.std()  # on the strongest edges about edge_noise (0.3) of the flat level
    _, gaussian = draw(n=20, crop=64, test_sigma=[50])
    r = gaussian.observed["noisy"] - gaussian.target["clean"]
    e = edge_strength(gaussian.target["clean"])
    assert float(r[e > 0.9].std()) == pytest.approx(float(r[e < 0.05].std()), rel=0.1)


def _write_images(folder, sizes, rng):
    from skimage import io

    folder.mkdir(parents=True)
    images = []
    for i, (h, w) in enumerate(sizes):
        grey = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        if i % 2:  # RGB files are read as grayscale
            io.imsave(folder / f"im{i}.png", np.stack([grey] * 3, axis=-1), check_contrast=False)
        else:
            io.imsave(folder / f"im{i}.png", grey, check_contrast=False)
        images.append(grey / 255.0)
    return images


def test_folder_source_loads_crops_of_the_users_images(tmp_path):
    rng = np.random.default_rng(0)
    train = _write_images(tmp_path / "train", [(20, 24), (24, 20)], rng)
    test = _write_images(tmp_path / "test", [(18, 18)], rng)
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    fam = family(source="folder", path=str(tmp_path))
    inst = fam.draw(6, torch.Generator().manual_seed(0), {}, "train")
    for crop in inst.target["clean"][:, 0].double().numpy():
        found = any(np.allclose(image[i:i + 16, j:j + 16], crop, atol=1e-6) for image in train
                    for i in range(image.shape[0] - 15) for j in range(image.shape[1] - 15))
        assert found
    crops = fam.draw(4, torch.Generator().manual_seed(0), {}, "test").target["clean"][:, 0].double().numpy()
    assert all(any(np.allclose(test[0][i:i + 16, j:j + 16], c, atol=1e-6) for i in range(3) for j in range(3))
               for c in crops)
    # The folder's listing is part of the data's identity (cache key).
    (tmp_path / "test" / "im0.png").touch()
    _write_images(tmp_path / "test" / "more", [(18, 18)], rng)
    assert family(source="folder", path=str(tmp_path)).version.startswith("1+")


@pytest.mark.parametrize("layout, match", [
    ({}, "is not a folder"),
    ({"train": 1}, "no test/ subfolder"),
    ({"train": 1, "test": 0}, r"test holds no image \(\.png"),
])
def test_folder_source_errors(tmp_path, layout, match):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name, count in layout.items():
        (root / name).mkdir(parents=True)
        if count:
            _write_images(root / name / "x", [(20, 20)] * count, rng)
            for p in (root / name / "x").iterdir():
                p.rename(root / name / p.name)
    with pytest.raises(ValueError, match=match):
        family(source="folder", path=str(root))


def test_folder_source_refuses_images_smaller_than_the_crop(tmp_path):
    rng = np.random.default_rng(0)
    _write_images(tmp_path / "train", [(20, 20)], rng)
    _write_images(tmp_path / "test", [(12, 30)], rng)
    with pytest.raises(ValueError, match=r"crop 16 is larger than image\(s\) .*im0.png \(12 x 30\)"):
        family(source="folder", path=str(tmp_path))  # when the family is built, i.e. when a suite is planned
    with pytest.raises(ValueError, match=r"crop 400 is larger than image\(s\) .*coins \(303 x 384\)"):
        family(source="skimage", crop=400)


def test_a_crop_larger_than_the_images_exits_2_at_planning(cli, tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"problems": [{"family": "denoising", "label": "big",
                                               "settings": {**TINY, "source": "skimage", "crop": 600}}],
                                 "solvers": [{"solver": "tv"}]}))
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and "problems[0].settings: crop 600 is larger than image(s)" in err, out + err
    assert "Traceback" not in out + err and not (tmp_path / "r").exists()


def test_bundled_images_load_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access while loading a bundled image")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for name in TRAIN_IMAGES + TEST_IMAGES:
        image = skimage_image(name)
        assert image.ndim == 2 and min(image.shape) >= 300 and 0 <= image.min() and image.max() <= 1, name
        assert image.std() > 0.05, name
    assert not set(TRAIN_IMAGES) & set(TEST_IMAGES)
    _, inst = draw(n=3, source="skimage", crop=32)
    assert inst.target["clean"].shape == (3, 1, 32, 32)


def test_psnr_and_ssim_match_scikit_image_and_are_reported_per_level():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    fam, inst = draw(n=10, crop=32)
    noisy, clean = inst.observed["noisy"], inst.target["clean"]
    ours_psnr, ours_ssim = psnr(noisy, clean), ssim(noisy, clean)
    for k in range(10):
        x, y = noisy[k, 0].double().numpy(), clean[k, 0].double().numpy()
        assert ours_psnr[k].item() == pytest.approx(peak_signal_noise_ratio(y, x, data_range=1.0), rel=1e-9)
        assert ours_ssim[k].item() == pytest.approx(structural_similarity(x, y, data_range=1.0), rel=1e-9)
    values = {(m.metric, m.subset): m.value for m in fam.evaluate(noisy, inst)}
    assert values[("psnr", "all")] == pytest.approx(float(ours_psnr.mean()))
    level_15 = inst.groups["sigma"] == 15
    assert values[("psnr", "sigma=15")] == pytest.approx(float(ours_psnr[level_15].mean()))
    assert values[("psnr", "sigma=15")] == pytest.approx(20 * math.log10(255 / 15), abs=0.5)
    assert {s for m, s in values if m == "ssim"} == {"all"} | {f"sigma={v}" for v in (15, 25, 35, 45, 55)}
    assert values[("mse", "all")] == pytest.approx(float(((noisy - clean) ** 2).double().mean()))
    assert fam.evaluate(clean, inst)[0].value == math.inf  # exact: infinite PSNR
    # A solver's noise level estimate (extras) is scored against the true level, in grey levels.
    assert fam.evaluate_extras({}, inst) == []
    errors = {m.subset: m.value for m in fam.evaluate_extras({"sigma": inst.observed["sigma"] + 2 / 255}, inst)}
    assert errors["all"] == pytest.approx(2.0, rel=1e-5) and errors["sigma=55"] == pytest.approx(2.0, rel=1e-5)


def test_estimates_of_another_shape_are_refused():
    fam, inst = draw(n=4)
    noisy = inst.observed["noisy"]
    check_estimate(fam, noisy.clone(), inst)
    for bad in (noisy[:, 0], noisy.unsqueeze(1), noisy[..., :8]):
        with pytest.raises(InvalidEstimateError, match="does not match the clean images"):
            check_estimate(fam, bad, inst)


def test_wavelet_denoiser_equals_scikit_image_visushrink():
    from skimage.restoration import denoise_wavelet

    _, inst = draw(n=3, crop=32, test_sigma=[25])
    sigma = 25 / 255
    universal = math.sqrt(2 * math.log(32 * 32))  # VisuShrink's threshold sigma sqrt(2 log n)
    ours = solver("wavelet", tau=universal, wavelet="db2", levels=2, mode="symmetric").solve(inst.observation())
    for k in range(3):
        noisy = inst.observed["noisy"][k, 0].double().numpy()
        reference = denoise_wavelet(noisy, sigma=sigma, wavelet="db2", mode="soft", wavelet_levels=2,
                                    method="VisuShrink", rescale_sigma=False)
        np.testing.assert_allclose(ours.estimate[k, 0].double().numpy(), reference, atol=1e-5)


def test_wavelet_transform_is_orthonormal_so_the_closed_form_is_exact():
    _, inst = draw(n=4, crop=32)
    noisy = inst.observed["noisy"]
    for shifts in (1, 2):  # tau = 0 keeps every coefficient: the identity, with or without cycle spinning
        out = solver("wavelet", tau=0.0, wavelet="db4", shifts=shifts).solve(inst.observation()).estimate
        torch.testing.assert_close(out, noisy, atol=1e-5, rtol=0)
    # Soft-thresholding at tau sigma is the minimiser of 0.5 ||y - W^T c||^2 + tau sigma ||c_detail||_1:
    # the objective at the closed form is below that at perturbed coefficients.
    import pywt

    y = noisy[0, 0].double().numpy()
    t = 1.5 * float(inst.observed["sigma"][0])
    coeffs = pywt.wavedec2(y, "haar", mode="periodization", level=2)

    def objective(c):
        x = pywt.waverec2(c, "haar", mode="periodization")
        return 0.5 * ((y - x) ** 2).sum() + t * sum(np.abs(d).sum() for detail in c[1:] for d in detail)

    closed = [coeffs[0]] + [tuple(np.sign(d) * np.maximum(np.abs(d) - t, 0) for d in detail) for detail in coeffs[1:]]
    x = solver("wavelet", tau=1.5, wavelet="haar", levels=2).solve(inst.subset(slice(0, 1)).observation()).estimate
    np.testing.assert_allclose(x[0, 0].double().numpy(), pywt.waverec2(closed, "haar", mode="periodization"),
                               atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        moved = [closed[0]] + [tuple(d + 0.01 * rng.standard_normal(d.shape) for d in detail) for detail in closed[1:]]
        assert objective(moved) > objective(closed)


def test_tv_denoiser_improves_psnr_at_sigma_25_on_dead_leaves():
    fam, inst = draw(n=6, crop=32, test_sigma=[25])
    noisy_psnr = float(psnr(inst.observed["noisy"], inst.target["clean"]).mean())
    out = solver("tv", weight=1.0).solve(inst.observation()).estimate
    assert float(psnr(out, inst.target["clean"]).mean()) > noisy_psnr + 3.0


def test_bm3d_beats_tv_on_a_natural_image():
    _, inst = draw(n=2, source="skimage", crop=64, test_sigma=[25])
    clean = inst.target["clean"]
    tv = max(float(psnr(solver("tv", weight=w).solve(inst.observation()).estimate, clean).mean())
             for w in (0.5, 1.0, 1.5))  # TV at its best weight
    bm3d = float(psnr(solver("bm3d").solve(inst.observation()).estimate, clean).mean())
    assert bm3d > tv + 0.5


def test_bm3d_refuses_images_too_small_for_it():
    _, inst = draw(n=1, crop=8)
    with pytest.raises(ValueError, match="bm3d needs images of at least 16 x 16"):
        solver("bm3d").solve(inst.observation())


def test_non_blind_denoisers_need_sigma_and_blind_ones_estimate_it():
    fam, inst = draw(n=10, source="skimage", crop=64, test_sigma=[25])
    with pytest.raises(KeyError, match="non-blind"):
        solver("tv").solve(blind_observation(inst.observation()))
    blind = solver("wavelet", noise_level="estimated").solve(blind_observation(inst.observation()))
    error = {m.subset: m.value for m in fam.evaluate_extras(blind.extras, inst)}
    assert error["all"] < 4.0  # grey levels, at sigma = 25
    given = solver("wavelet").solve(inst.observation())
    assert "sigma" not in given.extras
    # sigma = 0: no noise, the image is returned as it is
    zero = {**inst.observation(), "sigma": torch.zeros(10)}
    torch.testing.assert_close(solver("tv").solve(zero).estimate, inst.observed["noisy"])


def test_classical_denoisers_tune_their_multiplier_on_validation():
    from l2obench.testing import smoke_context

    context, test = smoke_context(REGISTRY, "denoising", {**TINY, "crop": 32, "n_val": 20})
    grid = list(REGISTRY.solver("tv").params["weight"].grid)
    model = solver("tv", level_edges=[]).fit(type(context)(**{**vars(context), "tune": {"weight": grid}}))
    assert [row["weight"] for row in model.tuning_] == grid
    best = min(model.tuning_, key=lambda row: row["val_loss"])
    assert model.weight == best["weight"] and model.levels_ == []


def test_classical_denoisers_tune_per_noise_level_and_solve_each_image_with_its_levels_choice():
    from l2obench.testing import smoke_context

    context, test = smoke_context(REGISTRY, "denoising", {**TINY, "crop": 32, "n_val": 40, "n_test": 30,
                                                          "test_sigma": [5, 25, 60]})
    context = type(context)(**{**vars(context), "tune": {"weight": list(REGISTRY.solver("tv").params["weight"].grid)}})
    model = solver("tv").fit(context)
    single = solver("tv", level_edges=[]).fit(context)
    assert len(model.levels_) == 5
    levels = [row["level"] for row in model.tuning_ if "level" in row]
    for b, level in enumerate(dict.fromkeys(levels)):
        rows = [row for row in model.tuning_ if row.get("level") == level]
        assert model.levels_[b]["weight"] == min(rows, key=lambda row: row["val_loss"])["weight"]
    # choosing per level can only lower the validation loss
    val = context.val
    loss = lambda m: float(DENOISING.build(**{**TINY, "crop": 32}).loss(m.solve(val.observation()).estimate,
                                                                       val.target).sum())
    assert loss(model) <= loss(single) * (1 + 1e-9)
    # each test image is denoised with its own bin's weight (sigma 5 -> bin 0, 25 -> 1, 60 -> 4)
    observation, estimate = test.observation(), model.solve(test.observation()).estimate
    for b in (0, 1, 4):
        rows = torch.nonzero(torch.as_tensor(model.level_bins(observation["sigma"].double().numpy()) == b)).flatten()
        alone = solver("tv", level_edges=[], weight=model.levels_[b]["weight"]).solve(
            {key: value[rows] for key, value in observation.items()}).estimate
        torch.testing.assert_close(estimate[rows], alone)
    restored = solver("tv").load_state_dict(model.state_dict())
    assert restored.levels_ == model.levels_
    torch.testing.assert_close(restored.solve(observation).estimate, estimate)


@pytest.mark.parametrize("settings, match", [
    ({"crop": 4}, r"settings.crop: must be an int >= 8"),
    ({"noise": "poisson"}, r"settings.noise: must be one of gaussian, adaptive"),
    ({"source": "folder"}, "source = 'folder' needs path"),
    ({"path": "/tmp"}, "path is a setting of source = 'folder' only"),
    ({"source": "folder", "path": "/no/such/folder"}, "is not a folder"),
    ({"radius": [10.0, 2.0]}, r"radius must be \[lo, hi\] with 0 <= lo <= hi"),
    ({"radius": [0.1, 2.0]}, r"settings.radius: must be a number >= 0.5"),
    ({"train_sigma": [55, 0]}, r"train_sigma must be \[lo, hi\]"),
    ({"test_sigma": -5}, r"settings.test_sigma: must be a number >= 0"),
    ({"edge_noise": 2}, r"settings.edge_noise: must be a number in \[0, 1\]"),
])
def test_invalid_settings_name_the_entry_and_setting(settings, match):
    suite = {"problems": [{"family": "denoising", "settings": settings}], "solvers": []}
    with pytest.raises(SuiteFileError, match=r"den\.problems\[0\].*" + match):
        plan(REGISTRY, "den", suite, scale="smoke")


def test_bad_settings_exit_2_from_the_command_line(cli, tmp_path):
    path = tmp_path / "den.json"
    path.write_text(json.dumps({"problems": [{"family": "denoising", "settings": {"crop": 4}}],
                                "solvers": [{"solver": "tv"}]}))
    code, out, err = cli("run", "--suite", str(path), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 2 and "crop: must be an int >= 8" in err and "Traceback" not in err


def test_denoising_suite_plans_at_each_scale():
    definition = REGISTRY.suite("denoising").definition
    pairs = {scale: {(c.problem_label, c.solver_label) for c in plan(REGISTRY, "denoising", definition, scale=scale)}
             for scale in ("smoke", "small", "paper")}
    classical = {"Wavelet (soft)", "Wavelet (soft, cycle spinning)", "TV (Chambolle)"}
    learned = {"DnCNN", "DnCNN-stop"}
    energy = {f"{a}^k energy ({size})" for a in ("GD", "NAG") for size in ("about right", "under", "over")}
    assert pairs["smoke"] == {(p, s) for p in ("dead-leaves", "photos") for s in classical} | {
        ("photos", s) for s in learned | {"GD^4 energy"}}
    problems = ("dead-leaves", "dead-leaves-adaptive", "photos")
    assert pairs["small"] == {(p, s) for p in problems for s in classical} | {("photos", "BM3D")} | {
        (p, s) for p in ("dead-leaves", "photos") for s in learned}
    assert pairs["paper"] == {(p, s) for p in problems for s in classical | {"BM3D"} | learned} | {
        ("dead-leaves-adaptive", s) for s in energy}
    paper = plan(REGISTRY, "denoising", definition, scale="paper")[0]
    assert paper.settings["crop"] == 180 and paper.settings["test_sigma"] == [15.0, 25.0, 35.0, 45.0, 55.0]
    assert paper.settings["ood_sigma"] == [65.0, 75.0] and paper.settings["train_sigma"] == [0.0, 55.0]


def test_denoising_smoke_suite_end_to_end_reports_psnr_and_ssim_per_noise_level(cli, tmp_path):
    from l2obench.results import read_results

    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", "denoising", "--scale", "smoke", "--results", str(results),
                         "--no-progress")
    assert code == 0, out + err
    for heading in ("psnr [sigma=15]", "ssim [sigma=55]", "psnr [ood]", "ssim [ood]", "gap [ood]"):
        assert heading in out
    df = read_results([results])
    final = df[df["iteration"].isna() & (df["problem"] == "photos")]
    ood = final[(final["split"] == "ood") & (final["metric"] == "psnr")]
    assert set(ood["subset"]) == {"all", "sigma=65", "sigma=75"}
    psnr_all = final[(final["split"] == "test") & (final["metric"] == "psnr") & (final["subset"] == "all")]
    assert psnr_all.set_index("solver")["value"].min() > 21.0  # every one denoises (noisy: about 18 dB)
    # the visual comparison: each solver's output of the first image per level, and the inputs once
    from PIL import Image

    def pixels(path):
        with Image.open(path) as png:
            assert png.mode == "L" and png.size == (16, 16)
            return torch.from_numpy(np.asarray(png, dtype=np.float64) / 255)

    images = results / "images" / "photos" / "seed0"
    inputs = images / "input" / "test"
    names = sorted(p.name[:-len("_clean.png")] for p in inputs.glob("*_clean.png"))
    assert [name.split("_")[0] for name in names] == [f"sigma{level}" for level in (15, 25, 35, 45, 55)]
    for solver in psnr_all["solver"]:
        folder = images / re.sub(r"[^A-Za-z0-9._=-]+", "_", solver).strip("_")
        assert sorted(p.name for p in (folder / "test").iterdir()) == [f"{name}.png" for name in names]
        assert sorted(p.name.split("_")[0] for p in (folder / "ood").iterdir()) == ["sigma65", "sigma75"]
        clean = torch.stack([pixels(inputs / f"{name}_clean.png") for name in names])
        noisy = torch.stack([pixels(inputs / f"{name}_noisy.png") for name in names])
        out = torch.stack([pixels(folder / "test" / f"{name}.png") for name in names])
        assert psnr(out, clean).mean() > psnr(noisy, clean).mean(), solver  # the PNGs show the denoising
    # composed side by side, one figure per split: a row per level, clean, noisy and a column per solver
    from l2obench.gallery import galleries

    figures = galleries([results], tmp_path / "gallery")
    assert sorted(path.name for path, _ in figures["photos"]) == ["gallery_photos_seed0_ood.png",
                                                                  "gallery_photos_seed0_test.png"]
    with Image.open(tmp_path / "gallery" / "gallery_photos_seed0_test.png") as figure:
        width, height = figure.size
    columns = 2 + len(psnr_all)
    assert width == pytest.approx(1.6 * columns * 110, abs=2) and height == pytest.approx((1.75 * 5 + 0.3) * 110, abs=2)


SNOOPING_PLUGIN = '''
import json, os
import l2obench
from l2obench.contracts import Solution, Solver

class Snooping(Solver):
    """Records the observation keys fit and solve are given; declares sigma when told to."""
    def side_information(self):
        return ("sigma",) if self.declare else ()
    def record(self, where, keys):
        with open(os.environ["SNOOP_LOG"], "a") as log:
            log.write(json.dumps([self.declare, where, sorted(keys)]) + "\\n")
    def fit(self, context):
        self.record("fit train", context.train.observation())
        self.record("fit val", context.val.observation())
        self.record("fit stream", context.draw_train(2).observation())
        return self
    def solve(self, observation, trajectory=False):
        self.record("solve", observation)
        return Solution(observation["noisy"].clone())

@l2obench.hookimpl
def l2obench_register_solvers(register):
    register(l2obench.SolverSpec(name="snooping", factory=Snooping, families=("denoising",), learned=True,
                                 params={"declare": l2obench.Param(False, type=bool)}))
'''


def test_the_runner_hides_the_noise_level_from_solvers_that_do_not_declare_it(cli, tmp_path, monkeypatch):
    plugin, log = tmp_path / "snooping.py", tmp_path / "snoop.log"
    plugin.write_text(SNOOPING_PLUGIN)
    monkeypatch.setenv("SNOOP_LOG", str(log))
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({
        "budget": {"steps": 1, "batch_size": 2, "eval_every": 1, "patience": 1},
        "problems": [{"family": "denoising", "label": "tiny", "settings": TINY}],
        "solvers": [{"solver": "snooping", "label": "blind"},
                    {"solver": "snooping", "label": "non-blind", "params": {"declare": True}},
                    {"solver": "tv", "label": "TV given sigma"},
                    {"solver": "tv", "label": "TV estimating sigma", "params": {"noise_level": "estimated"}}]}))
    code, out, err = cli("run", "--suite", str(suite), "--plugin", str(plugin), "--results", str(tmp_path / "r"),
                         "--no-progress")
    assert code == 0, out + err
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert {where for _, where, _ in seen} == {"fit train", "fit val", "fit stream", "solve"}
    for declared, where, keys in seen:
        assert keys == (["noisy", "sigma"] if declared else ["noisy"]), (declared, where)
    # the classical denoisers: given sigma when they read it, refused it when they estimate it
    assert REGISTRY.solver("tv").build("denoising").side_information() == ("sigma",)
    assert REGISTRY.solver("tv").build("denoising", noise_level="estimated").side_information() == ()
    from l2obench.results import read_results

    df = read_results([tmp_path / "r"])
    assert set(df["status"]) == {"ok"}
    errors = df[df["metric"] == "sigma_error"]
    assert set(errors["solver"]) == {"TV estimating sigma"}  # scored against the hidden true sigma


def test_a_gallery_of_many_solvers_is_split_into_legible_figures_in_natural_order(tmp_path):
    """A sweep's models (18 in the energy-denoising suite) in one figure made panels too small to see."""
    from PIL import Image

    from l2obench import gallery

    seed_dir = tmp_path / "run" / "images" / "dead-leaves" / "seed0"
    (seed_dir / "input" / "test").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for level in (15, 55):
        for kind in ("clean", "noisy"):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(
                seed_dir / "input" / "test" / f"sigma{level}_0_{kind}.png")
    solvers = [f"GD_k_energy_{size}_k={k}" for size in ("over", "under") for k in (1, 4, 12)] + ["TV", "Wavelet"]
    for solver in solvers:
        (seed_dir / solver / "test").mkdir(parents=True)
        for level in (15, 55):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(
                seed_dir / solver / "test" / f"sigma{level}_0.png")
    assert gallery.solver_folders(seed_dir, "test")[:3] == ["GD_k_energy_over_k=1", "GD_k_energy_over_k=4",
                                                            "GD_k_energy_over_k=12"]
    figures = gallery.galleries([tmp_path / "run"], tmp_path / "out")["dead-leaves"]
    assert [path.name for path, _ in figures] == ["gallery_dead-leaves_seed0_test_part1.png",
                                                  "gallery_dead-leaves_seed0_test_part2.png"]
    assert [caption.endswith(f"part {i} of 2)") for i, (_, caption) in enumerate(figures, 1)] == [True, True]
    widths = []
    for path, _ in figures:
        with Image.open(path) as figure:
            widths.append(figure.size[0])
    per_column = 1.6 * 110
    assert widths == pytest.approx([(2 + gallery.MAX_SOLVER_COLUMNS) * per_column, (2 + 2) * per_column], abs=2)
