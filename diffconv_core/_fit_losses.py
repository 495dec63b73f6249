"""Losses for :mod:`diffconv_core.fitting`: mean squared, mean absolute, spectral."""

from __future__ import annotations

import torch

from diffconv_core._validation import check_choice

LOSSES = ("mse", "l1", "spectral")


def spectral_loss(
    prediction: torch.Tensor, target: torch.Tensor, n_fft: int = 256, eps: float = 1e-7
) -> torch.Tensor:
    """Distance between short-time magnitude spectra: linear L1 plus log L1.

    Frames of ``n = min(n_fft, T)`` samples, hop ``max(1, n // 4)``, no centring (frames start
    at 0, hop, ... and the tail that fills no frame is ignored), a periodic Hann window, the
    one-sided DFT. With ``M = sqrt(re**2 + im**2 + eps**2)`` (smooth at 0, so gradients stay
    finite) the loss is ``mean|M_p - M_t| + mean|log M_p - log M_t|``. Insensitive to phase:
    use it when the target's timing is not trustworthy.

    Shape:
        prediction, target: ``(..., T)`` of the same shape -> scalar.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 512)
        >>> float(spectral_loss(x, x))
        0.0
        >>> bool(spectral_loss(x, -x) < 1e-6)  # a sign flip leaves magnitudes unchanged
        True
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape; got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    n = min(n_fft, prediction.shape[-1])
    hop = max(1, n // 4)
    window = torch.hann_window(n, periodic=True, dtype=prediction.dtype, device=prediction.device)

    def magnitude(x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x.unfold(-1, n, hop) * window, dim=-1)
        return (spectrum.real.square() + spectrum.imag.square() + eps**2).sqrt()

    mp, mt = magnitude(prediction), magnitude(target)
    return (mp - mt).abs().mean() + (mp.log() - mt.log()).abs().mean()


def compute_loss(prediction: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss ``"mse"``, ``"l1"`` or ``"spectral"`` (:func:`spectral_loss`).

    Shape:
        prediction, target: ``(..., T)`` of the same shape -> scalar.

    Example:
        >>> import torch
        >>> compute_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), "mse")
        tensor(2.5000)
    """
    check_choice("loss", loss, LOSSES)
    if loss == "mse":
        return (prediction - target).square().mean()
    if loss == "l1":
        return (prediction - target).abs().mean()
    return spectral_loss(prediction, target)
