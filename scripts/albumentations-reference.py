#!/usr/bin/env python3
"""Generate Albumentations reference fixtures for the Rust augmentation tests.

The Rust crate `train` re-implements a handful of Albumentations transforms.
This script records what Albumentations 2.0.8 (with the OpenCV wheel it pulls
in) produces for small, deterministic inputs, so the Rust tests can compare
pixel for pixel without needing Python at test time.

Usage (from the repository root):

    python3 -m venv /tmp/venv-alb
    /tmp/venv-alb/bin/pip install albumentations==2.0.8
    /tmp/venv-alb/bin/python scripts/albumentations-reference.py

Output (overwritten on every run), in crates/train/tests/fixtures/albumentations/:

    coarse_dropout.json, grid_distortion.json, elastic_transform.json,
    hue_saturation_value.json, random_resized_crop.json, gauss_noise.json
        One file per transform, each with a list of cases. A case holds the
        input image description (formula name + height/width/channels; the
        pixels are regenerated on the Rust side, see IMAGE_FORMULAS), the exact
        parameters handed to the transform's `apply`, and the expected output
        as a flat uint8 list in HWC order.
    draws.json
        Summary statistics (min/max/mean/std) of the random parameters each
        transform draws with its default arguments on a 64x64x3 image,
        sampled 2000 times with a fixed seed. The Rust side cannot reproduce
        numpy's/Python's RNG streams, so it compares distributions instead.

All floats are written as the exact double value of the float32 (or float64)
number Albumentations used, so parsing into f64 and casting to f32 is lossless.

OpenCV version matters: `pip install albumentations==2.0.8` currently resolves
to opencv-python-headless 5.0.x. OpenCV 5 remaps (GridDistortion,
ElasticTransform) with float32 bilinear interpolation; OpenCV 4.x used
1/32-pixel fixed point, and its output differs by up to 4 grey levels on these
cases. Resize, HSV conversion, dropout and noise fixtures are the same under
4.10 and 5.0. The version used is recorded in every file's "meta".
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

import albumentations as A
from albumentations.augmentations.geometric import functional as fgeometric

EXPECTED_ALBUMENTATIONS = "2.0.8"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "crates/train/tests/fixtures/albumentations"

# --------------------------------------------------------------------------
# Deterministic test images. The Rust tests rebuild these from the name.
# --------------------------------------------------------------------------

IMAGE_FORMULAS: dict[str, str] = {
    "mod": "v(y, x, c) = (y*37 + x*23 + c*71) % 256",
    "gradient": (
        "smooth ramps with integer floor division: "
        "c=0: (x*255) // (W-1); c=1: (y*255) // (H-1); c=2: ((x+y)*255) // (W+H-2). "
        "A 1-channel gradient image uses the c=2 formula."
    ),
}


def make_image(formula: str, height: int, width: int, channels: int) -> np.ndarray:
    """Build an HxWxC uint8 image (C = 1 or 3) from one of IMAGE_FORMULAS."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    if formula == "mod":
        planes = [(y * 37 + x * 23 + c * 71) % 256 for c in range(channels)]
    elif formula == "gradient":
        ramps = [
            (x * 255) // (width - 1),
            (y * 255) // (height - 1),
            ((x + y) * 255) // (width + height - 2),
        ]
        planes = ramps if channels == 3 else [ramps[2]]
    else:
        raise ValueError(f"unknown formula {formula}")
    return np.stack(planes, axis=-1).astype(np.uint8)


def image_info(formula: str, img: np.ndarray) -> dict[str, Any]:
    h, w, c = img.shape
    # input_sum lets the Rust side check its copy of the formula first.
    return {"formula": formula, "height": h, "width": w, "channels": c, "input_sum": int(img.astype(np.int64).sum())}


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def floats(a: Any) -> list[float]:
    """Flatten to a list of Python floats (exact double value of each element)."""
    return [float(v) for v in np.asarray(a).ravel()]


def jsonable(value: Any) -> Any:
    """Tuples (as pydantic leaves them) become lists; everything else is kept."""
    return list(value) if isinstance(value, tuple) else value


def ctor_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in kwargs.items()}


def pixels(img: np.ndarray) -> list[int]:
    assert img.dtype == np.uint8, img.dtype
    return [int(v) for v in img.ravel()]


def run_transform(t: A.BasicTransform, img: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the transform the way a pipeline would (p must be 1.0) and return (output, params)."""
    t.set_random_seed(seed)
    out = t(image=img)["image"]
    return out, t.get_applied_params()


def check_apply(t: A.BasicTransform, img: np.ndarray, expected: np.ndarray, **params: Any) -> np.ndarray:
    """Re-apply with explicit params and make sure we recorded everything apply() needs."""
    out = t.apply(img, **params)
    if out.ndim == 2:  # keep HWC even for 1-channel images
        out = out[..., None]
    assert out.shape == expected.shape and np.array_equal(out, expected), f"{type(t).__name__}: apply mismatch"
    return out


# --------------------------------------------------------------------------
# Per-transform fixture cases
# --------------------------------------------------------------------------


def coarse_dropout_cases() -> dict[str, Any]:
    cases = []
    specs = [
        # (formula, H, W, C, ctor kwargs, seed)
        ("mod", 13, 17, 3, {"num_holes_range": (2, 4), "hole_height_range": (2, 5), "hole_width_range": (3, 6)}, 11),
        ("mod", 13, 17, 3, {"num_holes_range": (1, 3), "hole_height_range": (0.2, 0.5), "hole_width_range": (0.1, 0.4),
                            "fill": (255, 128, 7)}, 12),
        ("gradient", 11, 11, 1, {"num_holes_range": (3, 3), "hole_height_range": (1, 4), "hole_width_range": (1, 4),
                                 "fill": 77}, 13),
    ]
    for formula, h, w, c, kwargs, seed in specs:
        img = make_image(formula, h, w, c)
        t = A.CoarseDropout(p=1.0, **kwargs)
        out, params = run_transform(t, img, seed)
        check_apply(t, img, out, holes=params["holes"], seed=params["seed"])
        cases.append({
            "image": image_info(formula, img),
            "constructor": ctor_args(kwargs),
            "seed": seed,
            # holes: [x_min, y_min, x_max, y_max], half-open (pixels [y_min, y_max) x [x_min, x_max)).
            "params": {"holes": params["holes"].tolist(), "fill": jsonable(t.fill)},
            "expected": pixels(out),
        })
    return {"transform": "CoarseDropout", "cases": cases}


def grid_distortion_cases() -> dict[str, Any]:
    cases = []
    specs = [
        # (formula, H, W, C, ctor kwargs, seed)
        ("gradient", 13, 17, 3, {"num_steps": 5, "distort_limit": 0.3}, 21),
        ("mod", 13, 17, 3, {"num_steps": 4, "distort_limit": 0.5, "normalized": False, "fill": (10, 20, 30)}, 22),
        ("gradient", 11, 11, 1, {"num_steps": 3, "distort_limit": (-0.4, 0.2)}, 23),
    ]
    for formula, h, w, c, kwargs, seed in specs:
        img = make_image(formula, h, w, c)
        t = A.GridDistortion(p=1.0, **kwargs)
        out, params = run_transform(t, img, seed)

        # Replay the draws (same seed, same order as get_params_dependent_on_data) to
        # record the raw and normalized steps, then confirm they rebuild the same maps.
        rnd = random.Random(seed)
        raw_x = [1 + rnd.uniform(*t.distort_limit) for _ in range(t.num_steps + 1)]
        raw_y = [1 + rnd.uniform(*t.distort_limit) for _ in range(t.num_steps + 1)]
        steps_x, steps_y = list(raw_x), list(raw_y)
        if t.normalized:
            norm = fgeometric.normalize_grid_distortion_steps((h, w), t.num_steps, steps_x, steps_y)
            steps_x, steps_y = list(norm["steps_x"]), list(norm["steps_y"])
        map_x, map_y = fgeometric.generate_grid((h, w), steps_x, steps_y, t.num_steps)
        assert np.array_equal(map_x, params["map_x"]) and np.array_equal(map_y, params["map_y"])
        check_apply(t, img, out, map_x=map_x, map_y=map_y)

        cases.append({
            "image": image_info(formula, img),
            "constructor": ctor_args(kwargs),
            "seed": seed,
            "params": {
                "num_steps": t.num_steps,
                "normalized": t.normalized,
                "steps_x_raw": floats(raw_x),
                "steps_y_raw": floats(raw_y),
                "steps_x": floats(steps_x),
                "steps_y": floats(steps_y),
                "interpolation": "INTER_LINEAR",
                "border_mode": "BORDER_CONSTANT",
                "fill": jsonable(t.fill),
            },
            # float32 maps, row-major HxW, exactly as passed to cv2.remap.
            "map_x": floats(map_x),
            "map_y": floats(map_y),
            "expected": pixels(out),
        })
    return {"transform": "GridDistortion", "cases": cases}


def elastic_transform_cases() -> dict[str, Any]:
    cases = []
    specs = [
        # (formula, H, W, C, ctor kwargs, seed)
        ("gradient", 13, 17, 3, {}, 31),  # library defaults: alpha=1, sigma=50 -> sub-pixel, nearly uniform shift
        ("gradient", 13, 17, 3, {"alpha": 30.0, "sigma": 3.0}, 32),
        ("mod", 11, 11, 1, {"alpha": 20.0, "sigma": 2.0, "approximate": True}, 33),
    ]
    for formula, h, w, c, kwargs, seed in specs:
        img = make_image(formula, h, w, c)
        t = A.ElasticTransform(p=1.0, **kwargs)
        out, params = run_transform(t, img, seed)

        # Regenerate the displacement field with the same generator state.
        dx, dy = fgeometric.generate_displacement_fields(
            (h, w), t.alpha, t.sigma, same_dxdy=t.same_dxdy,
            kernel_size=(17, 17) if t.approximate else (0, 0),
            random_generator=np.random.default_rng(seed), noise_distribution=t.noise_distribution,
        )
        xs, ys = np.meshgrid(np.arange(w), np.arange(h))
        map_x = (xs + dx).astype(np.float32)  # int64 + float32 -> float64, then one rounding to float32
        map_y = (ys + dy).astype(np.float32)
        assert np.array_equal(map_x, params["map_x"]) and np.array_equal(map_y, params["map_y"])
        check_apply(t, img, out, map_x=map_x, map_y=map_y)

        cases.append({
            "image": image_info(formula, img),
            "constructor": ctor_args(kwargs),
            "seed": seed,
            "params": {
                "alpha": t.alpha,
                "sigma": t.sigma,
                "approximate": t.approximate,
                "interpolation": "INTER_LINEAR",
                "border_mode": "BORDER_CONSTANT",
                "fill": t.fill,
            },
            # float32 displacement fields (row-major HxW); map = (float32)((double)x + dx).
            "dx": floats(dx),
            "dy": floats(dy),
            "expected": pixels(out),
        })
    return {"transform": "ElasticTransform", "cases": cases}


def hue_saturation_value_cases() -> dict[str, Any]:
    cases = []
    specs = [
        # (formula, H, W, C, (hue_shift, sat_shift, val_shift))
        ("mod", 13, 17, 3, (15.3, -25.7, 12.9)),
        ("gradient", 13, 17, 3, (-100.5, 40.0, -60.2)),
        ("mod", 13, 17, 3, (179.6, 255.0, 0.0)),
        ("gradient", 11, 11, 1, (0.0, 0.0, 30.6)),  # grayscale: hue/sat must be 0 (else ignored with a warning)
    ]
    t = A.HueSaturationValue(p=1.0)
    for formula, h, w, c, (hue, sat, val) in specs:
        img = make_image(formula, h, w, c)
        out = t.apply(img, hue_shift=hue, sat_shift=sat, val_shift=val)
        cases.append({
            "image": image_info(formula, img),
            "params": {"hue_shift": hue, "sat_shift": sat, "val_shift": val},
            "expected": pixels(out),
        })
    return {
        "transform": "HueSaturationValue",
        "note": "All rows are narrower than 32 pixels, so OpenCV's scalar (rounding) HSV->RGB path applies.",
        "cases": cases,
    }


def random_resized_crop_cases() -> dict[str, Any]:
    cases = []
    specs = [
        # (formula, H, W, C, output size (h, w), crop_coords or None to draw with seed, seed)
        ("mod", 13, 17, 3, (9, 11), None, 41),
        ("gradient", 13, 17, 3, (16, 16), None, 42),
        ("gradient", 11, 11, 1, (5, 5), (1, 0, 11, 10), None),  # exact 2x downscale (OpenCV INTER_AREA shortcut)
        ("mod", 13, 17, 3, (7, 15), (2, 3, 13, 12), None),      # mixed: width up, height down
    ]
    for formula, h, w, c, size, crop, seed in specs:
        img = make_image(formula, h, w, c)
        t = A.RandomResizedCrop(size=size, p=1.0)
        if crop is None:  # draw the crop box the way the pipeline does
            out, params = run_transform(t, img, seed)
            crop = tuple(int(v) for v in params["crop_coords"])
            out = check_apply(t, img, out.reshape(size[0], size[1], c), crop_coords=crop)
        else:  # hand-picked crop box
            out = t.apply(img, crop_coords=crop).reshape(size[0], size[1], c)
        cases.append({
            "image": image_info(formula, img),
            "seed": seed,
            # crop_coords: (x_min, y_min, x_max, y_max), half-open; then cv2.resize INTER_LINEAR to size.
            "params": {"crop_coords": list(crop), "size": list(size), "interpolation": "INTER_LINEAR"},
            "expected": pixels(out),
        })
    return {"transform": "RandomResizedCrop", "cases": cases}


def gauss_noise_cases() -> dict[str, Any]:
    cases = []
    specs = [
        # (formula, H, W, C, ctor kwargs, seed)
        ("mod", 13, 17, 3, {}, 51),
        ("gradient", 13, 17, 3, {"std_range": (0.3, 0.3), "mean_range": (0.1, 0.1), "per_channel": False}, 52),
        ("gradient", 11, 11, 1, {"std_range": (0.5, 0.5), "mean_range": (-0.2, -0.2), "noise_scale_factor": 0.5}, 53),
    ]
    for formula, h, w, c, kwargs, seed in specs:
        img = make_image(formula, h, w, c)
        t = A.GaussNoise(p=1.0, **kwargs)
        out, params = run_transform(t, img, seed)
        noise = np.ascontiguousarray(np.broadcast_to(params["noise_map"], img.shape), dtype=np.float32)
        check_apply(t, img, out, noise_map=noise)
        cases.append({
            "image": image_info(formula, img),
            "constructor": ctor_args(kwargs),
            "seed": seed,
            # float32 noise already scaled to pixel units (x255), HWC; output = clamp(img + trunc(noise), 0, 255).
            "noise_map": floats(noise),
            "expected": pixels(out),
        })
    return {"transform": "GaussNoise", "cases": cases}


# --------------------------------------------------------------------------
# Parameter draw distributions
# --------------------------------------------------------------------------


class RecordingRandom(random.Random):
    """random.Random that logs the value of every uniform()/random()/randint() call."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.log: list[tuple[str, float]] = []

    def random(self) -> float:
        v = super().random()
        self.log.append(("random", v))
        return v

    def uniform(self, a: float, b: float) -> float:
        v = a + (b - a) * super().random()  # same formula as CPython's Random.uniform
        self.log.append(("uniform", v))
        return v

    def randint(self, a: int, b: int) -> int:
        v = super().randint(a, b)
        self.log.append(("randint", v))
        return v


def stats(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64).ravel()
    return {
        "count": int(a.size),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "std": float(a.std()),
    }


def sample_draws(t: A.BasicTransform, n: int, seed: int, record: Callable[[dict[str, Any], list, dict], None]) -> dict:
    """Draw parameters n times (ignoring p) and let `record` collect scalars into a dict of lists."""
    img = np.zeros((64, 64, 3), np.uint8)
    rec = RecordingRandom(seed)
    t.set_random_state(np.random.default_rng(seed), rec)
    acc: dict[str, list] = {}
    for _ in range(n):
        rec.log.clear()
        params = t.get_params()
        params = t.update_transform_params(params, {"image": img})
        params.update(t.get_params_dependent_on_data(params, {"image": img}))
        record(params, list(rec.log), acc)
    return {k: stats(v) for k, v in acc.items()}


def push(acc: dict[str, list], key: str, value: Any) -> None:
    acc.setdefault(key, []).extend(np.asarray(value, dtype=np.float64).ravel().tolist())


def draw_distributions(n: int = 2000, seed: int = 12345) -> dict[str, Any]:
    xs = np.arange(64)[None, :]
    ys = np.arange(64)[:, None]

    def coarse(params, log, acc):
        holes = params["holes"]
        push(acc, "num_holes", len(holes))
        push(acc, "hole_height", holes[:, 3] - holes[:, 1])
        push(acc, "hole_width", holes[:, 2] - holes[:, 0])
        push(acc, "y_min", holes[:, 1])
        push(acc, "x_min", holes[:, 0])

    def grid(params, log, acc):
        vals = [v for kind, v in log if kind == "uniform"]
        push(acc, "steps_x_raw", [1 + v for v in vals[:6]])
        push(acc, "steps_y_raw", [1 + v for v in vals[6:]])
        push(acc, "map_x_minus_x", (params["map_x"] - xs).ravel())
        push(acc, "map_y_minus_y", (params["map_y"] - ys).ravel())
        push(acc, "max_abs_displacement", max(np.abs(params["map_x"] - xs).max(), np.abs(params["map_y"] - ys).max()))

    def elastic(params, log, acc):
        dx = params["map_x"].astype(np.float64) - xs
        dy = params["map_y"].astype(np.float64) - ys
        push(acc, "dx", dx)
        push(acc, "dy", dy)
        push(acc, "dx_mean_per_draw", dx.mean())
        push(acc, "dx_std_per_draw", dx.std())
        push(acc, "max_abs_displacement", max(np.abs(dx).max(), np.abs(dy).max()))

    def hsv(params, log, acc):
        for k in ("hue_shift", "sat_shift", "val_shift"):
            push(acc, k, params[k])

    def rrc(params, log, acc):
        x0, y0, x1, y1 = params["crop_coords"]
        push(acc, "crop_x_min", x0)
        push(acc, "crop_y_min", y0)
        push(acc, "crop_width", x1 - x0)
        push(acc, "crop_height", y1 - y0)
        push(acc, "crop_area_fraction", (x1 - x0) * (y1 - y0) / 4096)
        push(acc, "crop_aspect_w_over_h", (x1 - x0) / (y1 - y0))
        uniforms = [v for kind, v in log if kind == "uniform"]
        push(acc, "attempts_used", len(uniforms) // 2)
        push(acc, "fallback_used", float(not any(kind == "random" for kind, _ in log)))
        push(acc, "target_area_fraction_first_attempt", uniforms[0] / 4096)
        push(acc, "aspect_ratio_first_attempt", math.exp(uniforms[1]))

    def gauss(params, log, acc):
        sigma, mean = [v for kind, v in log if kind == "uniform"]
        push(acc, "sigma_fraction", sigma)
        push(acc, "mean_fraction", mean)
        noise = np.asarray(params["noise_map"], dtype=np.float64) / 255.0
        push(acc, "noise_std_fraction_per_draw", noise.std())
        push(acc, "noise_mean_fraction_per_draw", noise.mean())

    return {
        "description": (
            f"{n} draws per transform with default constructor arguments on a 64x64x3 uint8 image; "
            f"transform.set_random_state(np.random.default_rng({seed}), random.Random({seed})); "
            "p is ignored (get_params + get_params_dependent_on_data called directly). "
            "Each entry is count/min/max/mean/std over all recorded values."
        ),
        "seed": seed,
        "draws": n,
        "CoarseDropout": sample_draws(A.CoarseDropout(), n, seed, coarse),
        "GridDistortion": sample_draws(A.GridDistortion(), n, seed, grid),
        "ElasticTransform": sample_draws(A.ElasticTransform(), n, seed, elastic),
        "HueSaturationValue": sample_draws(A.HueSaturationValue(), n, seed, hsv),
        "RandomResizedCrop(size=(64, 64))": sample_draws(A.RandomResizedCrop(size=(64, 64)), n, seed, rrc),
        "GaussNoise": sample_draws(A.GaussNoise(), n, seed, gauss),
    }


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def to_json(obj: Any, indent: int = 0) -> str:
    """JSON with nested dicts indented but lists of scalars kept on one line."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad}  {json.dumps(k)}: {to_json(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [f"{pad}  {to_json(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(obj)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    args = parser.parse_args()

    if A.__version__ != EXPECTED_ALBUMENTATIONS:
        sys.exit(f"need albumentations=={EXPECTED_ALBUMENTATIONS}, found {A.__version__}")
    warnings.filterwarnings("ignore")

    meta = {
        "generator": "scripts/albumentations-reference.py",
        "albumentations": A.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "image_formulas": IMAGE_FORMULAS,
        "pixel_layout": "flat uint8 list, HWC row-major (index = (y*W + x)*C + c); channels are RGB",
    }
    outputs = {
        "coarse_dropout.json": coarse_dropout_cases,
        "grid_distortion.json": grid_distortion_cases,
        "elastic_transform.json": elastic_transform_cases,
        "hue_saturation_value.json": hue_saturation_value_cases,
        "random_resized_crop.json": random_resized_crop_cases,
        "gauss_noise.json": gauss_noise_cases,
        "draws.json": draw_distributions,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in outputs.items():
        doc = {"meta": meta, **build()}
        (args.out / name).write_text(to_json(doc) + "\n")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
