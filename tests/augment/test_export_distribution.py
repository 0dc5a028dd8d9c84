"""Exported pipelines sample the policy's distribution: per op, 2,000 images through each, measured from pixels.

Every op's parameter is measured from the output pixels by the same code for the policy, the
torchvision pipeline and the kornia module, then compared with a two-sample Kolmogorov-Smirnov test:

* geometric ops: the input's channels hold its pixel coordinates, so every interior output pixel
  holds the coordinate it was sampled from; a least-squares affine fit gives the angle, shift,
  factor, shear or flip exactly;
* brightness: mean shift of a flat grey image; contrast: ratio of standard deviations; saturation:
  projection on the colour deviation from grey; hue: hue of a flat colour; sharpness: projection on
  the deviation from the 3x3 smoothing (computed here, independently); cutout: erased area and the
  x-centroid of the erased mass.

Ranges are asymmetric so that a sign error would show, and ``p = 0.6`` so that the frequency of
application (the atom at the identity) is compared too.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from augdistill.augment import AugmentOp, Policy

N, SIDE = 2000, 16
PROBABILITY = 0.6
RANGES = {"rotate": (-10.0, 40.0), "translate-x": (-0.05, 0.2), "translate-y": (-0.2, 0.1), "scale": (0.9, 1.4),
          "shear-x": (-5.0, 20.0), "shear-y": (-20.0, 5.0), "hflip": None, "brightness": (-0.3, 0.45),
          "contrast": (0.6, 1.7), "saturation": (0.3, 1.8), "hue": (-0.1, 0.25), "sharpness": (0.2, 1.9),
          "cutout": (0.2, 0.6)}


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic ``D`` and its asymptotic p-value (ties allowed).

    The p-value is Kolmogorov's limiting distribution with Stephens' small-sample correction,
    ``Q((sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) D)``, ``n_e = n m / (n + m)`` (conservative with ties).
    """
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))
    en = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 1e-3:
        return d, 1.0
    q = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return d, min(max(q, 0.0), 1.0)


def test_ks_matches_known_values():
    """Same and shifted distributions; the statistic checked against a hand count."""
    rng = np.random.default_rng(0)
    same = ks_2samp(rng.uniform(size=2000), rng.uniform(size=2000))
    shifted = ks_2samp(rng.uniform(size=2000), rng.uniform(size=2000) + 0.1)
    assert same[1] > 0.05 and shifted[1] < 1e-6 and abs(shifted[0] - 0.1) < 0.03
    assert ks_2samp(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5, 2.5, 3.5]))[0] == pytest.approx(0.5)


def _grey_pattern(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, SIDE, SIDE, generator=g) * 2 - 1).expand(3, SIDE, SIDE)


def _input(name: str) -> torch.Tensor:
    """The ``(3, SIDE, SIDE)`` probe image each op is measured on."""
    if name == "brightness":
        return torch.full((3, SIDE, SIDE), 0.5)
    if name in ("contrast", "sharpness"):
        return 0.5 + 0.1 * _grey_pattern(1)
    if name == "saturation":
        g = torch.Generator().manual_seed(2)
        return 0.5 + 0.15 * (torch.rand(3, SIDE, SIDE, generator=g) * 2 - 1)
    if name == "hue":
        return torch.tensor([0.7, 0.4, 0.3])[:, None, None].expand(3, SIDE, SIDE).clone()
    if name == "cutout":
        return torch.ones(3, SIDE, SIDE)
    ramp = (torch.arange(SIDE) + 0.5) / SIDE  # geometric: x, y coordinates and a validity channel
    return torch.stack([ramp.expand(SIDE, SIDE), ramp[:, None].expand(SIDE, SIDE), torch.ones(SIDE, SIDE)])


def _affine_fit(out: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` map from output pixel to sampled source pixel, least squares on interior pixels."""
    ys, xs = torch.meshgrid(torch.arange(SIDE, dtype=torch.float64), torch.arange(SIDE, dtype=torch.float64),
                            indexing="ij")
    design = torch.stack([xs.flatten(), ys.flatten(), torch.ones(SIDE * SIDE, dtype=torch.float64)], 1)  # (P, 3)
    inside = (out[:, 2].flatten(1) > 1 - 1e-4).double()  # (B, P): all four bilinear neighbours inside
    source = out[:, :2].flatten(2).transpose(1, 2) * SIDE - 0.5  # (B, P, 2) source pixel coordinates
    normal = torch.einsum("bp,pi,pj->bij", inside, design, design)
    return torch.linalg.solve(normal, torch.einsum("bp,pi,bpk->bik", inside, design, source)).transpose(1, 2)


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in turns of ``(B, 3)`` colours (standard HSV formula)."""
    r, g, b = rgb.unbind(1)
    mx, mn = rgb.max(1).values, rgb.min(1).values
    d = mx - mn
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h / 6


def measure(name: str, out: torch.Tensor, x: torch.Tensor) -> list[np.ndarray]:
    """The op's parameter(s) per image of ``out`` (B, 3, H, W), measured from pixels alone."""
    out, x = out.double(), x.double()
    if name in ("rotate", "translate-x", "translate-y", "scale", "shear-x", "shear-y", "hflip"):
        m = _affine_fit(out)
        value = {"rotate": torch.rad2deg(torch.atan2(m[:, 1, 0], m[:, 0, 0])),
                 "translate-x": -m[:, 0, 2] / SIDE,
                 "translate-y": -m[:, 1, 2] / SIDE,
                 "scale": 1.0 / m[:, 0, 0],
                 "shear-x": torch.rad2deg(torch.atan(m[:, 0, 1])),
                 "shear-y": torch.rad2deg(torch.atan(m[:, 1, 0])),
                 "hflip": (m[:, 0, 0] < 0).double()}[name]
        return [value.numpy()]
    if name == "brightness":
        return [(out.mean((1, 2, 3)) - 0.5).numpy()]
    if name == "contrast":
        return [(out.std((1, 2, 3)) / x.std()).numpy()]
    if name == "saturation":
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None]
        dev = x - (x * weights).sum(0)
        return [((out - (x * weights).sum(0)) * dev).sum((1, 2, 3)).div((dev * dev).sum()).numpy()]
    if name == "hue":
        shift = _hue(out.mean((2, 3))) - _hue(x.mean((1, 2))[None])
        return [((shift + 0.5) % 1.0 - 0.5).numpy()]
    if name == "sharpness":
        kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64) / 13
        blur = F.conv2d(x[:1][None], kernel[None, None])[0, 0]  # interior (H-2, W-2)
        dev = x[0, 1:-1, 1:-1] - blur
        return [((out[:, :, 1:-1, 1:-1] - blur) * dev).sum((2, 3)).mean(1).div((dev * dev).sum()).numpy()]
    erased = 1.0 - out.mean(1)  # cutout: (B, H, W) erased mass
    area = erased.mean((1, 2))
    columns = (torch.arange(SIDE, dtype=torch.float64) + 0.5) / SIDE
    centroid = torch.where(area > 0, (erased.sum(1) * columns).sum(1) / erased.sum((1, 2)).clamp(min=1e-12), -1.0)
    return [area.numpy(), centroid.numpy()]


def _policy(name: str) -> Policy:
    rng = RANGES[name]
    op = AugmentOp(name, PROBABILITY) if rng is None else AugmentOp(name, PROBABILITY, rng, symmetric=False)
    return Policy([op]).train()


@functools.lru_cache(maxsize=None)
def _policy_measurements(name: str) -> list[np.ndarray]:
    x = _input(name)
    with torch.no_grad():
        out = _policy(name)(x.expand(N, *x.shape).contiguous(), generator=torch.Generator().manual_seed(0))
    return measure(name, out, x)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(RANGES))
def test_measurement_recovers_the_policy_values(name):
    """The measurement is exact on the policy's own draws (so the KS tests below compare parameters)."""
    policy = _policy(name)
    x = _input(name)
    params = policy.sample(64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = policy(x.expand(64, *x.shape).contiguous(), params=params)
        applied = params.gate[:, 0] < PROBABILITY
        values = policy.ops[0].values(params.u[:, 0].double())
    measured = measure(name, out, x)[0]
    spec = policy.ops[0].spec
    if name == "hflip":
        expected = applied.double()
    elif name == "cutout":  # erased area: side^2 where the square lies inside the image
        inside = ((params.aux[:, 0] - values[:, None] / 2 > 0) & (params.aux[:, 0] + values[:, None] / 2 < 1)).all(1)
        expected = torch.where(applied, values ** 2, torch.zeros_like(values))
        measured, expected = measured[inside.numpy()], expected[inside]
    else:
        expected = torch.where(applied, values, torch.full_like(values, spec.identity))
    tolerance = {"cutout": 2e-2, "hue": 2e-3}.get(name, 2e-3 * max(1.0, abs(spec.bounds[1]) if spec.bounds else 1.0))
    np.testing.assert_allclose(measured, expected.numpy(), atol=tolerance, rtol=0)


def _torchvision_outputs(name: str) -> torch.Tensor:
    pipeline = _policy(name).to_torchvision()
    x = _input(name)
    torch.manual_seed(1)
    return torch.stack([pipeline(x) for _ in range(N)])


def _kornia_outputs(name: str) -> torch.Tensor:
    module = _policy(name).to_kornia()
    x = _input(name)
    torch.manual_seed(2)
    with torch.no_grad():
        return module(x.expand(N, *x.shape).contiguous())


@pytest.mark.parametrize("library", ["torchvision", "kornia"])
@pytest.mark.parametrize("name", list(RANGES))
def test_export_samples_the_policy_distribution(name, library):
    theirs = _torchvision_outputs(name) if library == "torchvision" else _kornia_outputs(name)
    for a, b in zip(_policy_measurements(name), measure(name, theirs, _input(name))):
        lo, hi = RANGES[name] or (0.0, 1.0)
        d, p = ks_2samp(a, b)
        assert p > 0.01, f"{name} via {library}: KS D={d:.3f} p={p:.2g}; ours {np.percentile(a, [0, 50, 100])}, " \
                         f"theirs {np.percentile(b, [0, 50, 100])} (range {lo}, {hi})"
