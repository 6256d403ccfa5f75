"""The dual GAN decoder that supervises the motion latent besides the diffusion loss.

Two decoders turn (reference image, motion tokens) into the target frame: one sees the whole
frame, the other the central face region (eyes to mouth) at the same resolution, where subtle
expressions live. Each has its own patch discriminator. The decoders can only get the target's
expression from the motion tokens, and its identity only from the reference, which pushes
expression detail into the latent and keeps appearance out of it.
"""

import torch
import torch.nn.functional as F
from torch import nn

MOTION_TOKENS, MOTION_DIM = 32, 16


class _ModulatedBlock(nn.Module):
    """Upsample ×2, conv, instance-norm, then a per-channel scale and shift from the motion style."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.InstanceNorm2d(out_channels)
        self.style = nn.Linear(style_dim, 2 * out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(F.interpolate(x, scale_factor=2, mode="nearest")))
        scale, shift = self.style(style)[:, :, None, None].chunk(2, dim=1)
        return F.leaky_relu(x * (1 + scale) + shift, 0.2)


class MotionDecoder(nn.Module):
    """``reference`` ``(N, 3, S, S)`` + motion tokens ``(N, 32, 16)`` → image ``(N, 3, S, S)`` in [-1, 1]."""

    def __init__(self, channels: int = 64, style_dim: int = 256, levels: int = 3):
        super().__init__()
        downs, width = [], 3
        for _ in range(levels):
            downs += [nn.Conv2d(width, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width = channels
        self.appearance = nn.Sequential(*downs)
        self.style = nn.Sequential(nn.Linear(MOTION_TOKENS * MOTION_DIM, style_dim), nn.LeakyReLU(0.2))
        self.ups = nn.ModuleList(_ModulatedBlock(channels, channels, style_dim) for _ in range(levels))
        self.to_rgb = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, reference: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x, style = self.appearance(reference), self.style(tokens.flatten(1))
        for block in self.ups:
            x = block(x, style)
        return torch.tanh(self.to_rgb(x))


class PatchDiscriminator(nn.Module):
    """``(N, 3, S, S)`` → ``(N, 1, S/8, S/8)`` realness logits."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, channels, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels * 2, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels * 2, channels * 2, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels * 2, 1, 3, 1, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def face_region(images: torch.Tensor) -> torch.Tensor:
    """The central face region (eyes to mouth) of aligned face crops, resized back to their size."""
    size = images.shape[-1]
    top, left, span = int(size * 0.3), int(size * 0.25), int(size * 0.5)
    return F.interpolate(images[..., top : top + span, left : left + span], size=size, mode="bilinear")


class DualMotionDecoder(nn.Module):
    """The two heads: whole frame and face region."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.whole, self.region = MotionDecoder(channels), MotionDecoder(channels)

    def forward(self, reference: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.whole(reference, tokens), self.region(face_region(reference), tokens)

    @staticmethod
    def targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return target, face_region(target)


class DualDiscriminator(nn.Module):
    def __init__(self, channels: int = 64):
        super().__init__()
        self.whole, self.region = PatchDiscriminator(channels), PatchDiscriminator(channels)

    def forward(self, images: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.whole(images[0]), self.region(images[1])


def generator_loss(discriminator: DualDiscriminator, fakes) -> torch.Tensor:
    """Non-saturating GAN loss of the decoders. The discriminator's weights are read detached, so
    its gradients come from :func:`discriminator_loss` alone (and add up over accumulated batches)."""
    weights = {name: tensor.detach() for name, tensor in discriminator.state_dict(keep_vars=True).items()}
    logits = torch.func.functional_call(discriminator, weights, (fakes,))
    return sum(F.softplus(-logit).mean() for logit in logits)


def discriminator_loss(discriminator: DualDiscriminator, reals, fakes) -> torch.Tensor:
    real_logits = discriminator(reals)
    fake_logits = discriminator(tuple(fake.detach() for fake in fakes))
    return sum(F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(real_logits, fake_logits))
