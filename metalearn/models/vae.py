"""A variational autoencoder over images in [0, 1], the generator of generative replay.

Fully connected as in van de Ven & Tolias (2019): ``len(hidden)`` ReLU layers down to a
Gaussian latent code and the mirror image back up to one Bernoulli logit per pixel (Kingma &
Welling 2014, "Auto-Encoding Variational Bayes").
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metalearn.models.mlp import dense_layers


class VAE(nn.Module):
    """Encoder ``pixels -> hidden -> (mean, log-variance)``, decoder ``latent -> hidden reversed
    -> pixel logits``."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (400, 400),
                 latent: int = 100) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        pixels = math.prod(self.image_shape)
        self.latent = latent
        self.encoder = nn.Sequential(nn.Flatten(), *dense_layers([pixels, *hidden]))
        self.to_mean = nn.Linear(hidden[-1], latent)
        self.to_log_variance = nn.Linear(hidden[-1], latent)
        self.decoder = nn.Sequential(*dense_layers([latent, *reversed(hidden)]),
                                     nn.Linear(hidden[0], pixels))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The negative evidence lower bound per pixel, averaged over the batch.

        Reconstruction is the pixels' binary cross-entropy, the latent term the KL divergence
        from the standard normal prior; both are divided by the number of pixels, as in van de
        Ven & Tolias's code, so the loss has the scale of the classifier's.
        """
        hidden = self.encoder(x)
        mean, log_variance = self.to_mean(hidden), self.to_log_variance(hidden)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)
        logits = self.decoder(z)
        reconstruction = F.binary_cross_entropy_with_logits(
            logits, x.flatten(1), reduction="none").sum(1)
        kl = -0.5 * (1 + log_variance - mean.square() - log_variance.exp()).sum(1)
        return (reconstruction + kl).mean() / logits.shape[1]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images [n, *image_shape]: decoded draws from the prior, as pixel means."""
        device = self.to_mean.weight.device
        z = torch.randn(n, self.latent, generator=generator,
                        device=generator.device if generator is not None else device).to(device)
        return torch.sigmoid(self.decoder(z)).view(n, *self.image_shape)
