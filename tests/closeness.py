"""How close two computations of the same floats must be: relative to the magnitude compared and
sized by the dtype's rounding, never by what one machine happens to give.

A float32 sum of n terms taken in another order (another CPU's SIMD width, another matmul shape,
threads) may differ by up to about n * eps of the terms' summed magnitudes, eps = 2**-23 ~ 1.2e-7.
So a scalar is compared to a relative bound, and a tensor entry to a bound relative to the
largest entry of the tensor it belongs to: a single entry can be a near-cancelling sum far smaller
than the terms it was made of, and its rounding is that of those terms.
"""
import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float, msg: str = "") -> None:
    """Every entry of `actual` within `rel` times the largest |entry| of `expected` (exact when rel is 0)."""
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * scale,
                               msg=lambda m: f"{msg} (largest |entry| {scale:.3g}, rel {rel:g}): {m}")
