"""Variations: the starting noise slerped from the seed's noise towards the variation seed's."""

from __future__ import annotations

import torch


def slerp(t: float, a: torch.Tensor, b: torch.Tensor, dot_threshold: float = 0.9995
          ) -> torch.Tensor:
    """Spherical interpolation: the blend of two Gaussian noises that stays Gaussian."""
    a_flat, b_flat = a.flatten().double(), b.flatten().double()
    dot = torch.dot(a_flat / a_flat.norm(), b_flat / b_flat.norm())
    if abs(dot) > dot_threshold:
        return (1 - t) * a + t * b
    theta = torch.arccos(dot)
    sin = torch.sin(theta)
    mixed = (torch.sin((1 - t) * theta) / sin) * a.double()
    mixed = mixed + (torch.sin(t * theta) / sin) * b.double()
    return mixed.to(a.dtype)


def seed_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def variation_noise(seed: int, variation_seed: int, amount: float,
                    shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for `seed` moved `amount` (0..1) of the way towards `variation_seed`'s noise."""
    return slerp(amount, seed_noise(seed, shape), seed_noise(variation_seed, shape))
