"""Motion encoder: a face crop → 32 identity-agnostic motion tokens of 16 channels.

A FAN-style face-alignment network (stem, one 4-level hourglass, landmark-heatmap head) with three
patch self-attention layers inserted, squeezed into a 512-d face-motion vector. A 3-d box
parameter is embedded and fused in, and the result is cut into 32 tokens of 16 channels plus a
fixed sin/cos token position embedding. Parameter names follow the official checkpoint.
"""

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import PatchEmbed, get_1d_sincos_pos_embed_from_grid
from einops import rearrange
from torch import nn

from .attention_blocks import AttentionStack

NUM_TOKENS = 32
TOKEN_DIM = 16
FACE_SIZE = 224


class ConvBlock(nn.Module):
    """Pre-activation residual block whose three 3×3 convs' outputs are concatenated (½+¼+¼)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
        self.downsample = (
            nn.Sequential(
                nn.BatchNorm2d(in_channels),
                nn.ReLU(),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )
            if in_channels != out_channels
            else None
        )

    def forward(self, x):
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels over 256-channel features (names ``b1_4`` … ``b3_1``)."""

    def __init__(self, depth: int, channels: int = 256):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(channels, channels))
            self.add_module(f"b2_{level}", ConvBlock(channels, channels))
            self.add_module(f"b3_{level}", ConvBlock(channels, channels))
        self.add_module("b2_plus_1", ConvBlock(channels, channels))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        lower = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        if level > 1:
            lower = self._level(level - 1, lower)
        else:
            lower = self._modules["b2_plus_1"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(lower, size=upper.shape[-2:], mode="bilinear")

    def forward(self, x):
        return self._level(self.depth, x)


class PatchSelfAttention(nn.Module):
    """Residual self-attention over non-overlapping patches of a feature map.

    GroupNorm → patch embedding (with 2-D sin/cos positions) → one attention stack → a per-pixel
    linear back from each patch's channels → unpatchify, added to the input.
    Shapes: ``(N, C, S, S)`` → ``(N, C, S, S)`` with ``S = sample_size``.
    """

    def __init__(self, channels: int, sample_size: int, patch_size: int, heads: int = 8, head_dim: int = 128):
        super().__init__()
        inner_dim = heads * head_dim
        self.patch_size = patch_size
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.pos_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=channels,
            embed_dim=inner_dim,
            interpolation_scale=1,
        )
        self.transformer_blocks = nn.ModuleList([AttentionStack(inner_dim, heads, num_attentions=1)])
        self.proj_out = nn.Linear(inner_dim // patch_size**2, channels)

    def forward(self, x):
        tokens = self.pos_embed(self.norm(x))
        for block in self.transformer_blocks:
            tokens = block(tokens)
        p = self.patch_size
        pixels = rearrange(tokens, "n (h w) (p q c) -> n h w p q c", h=x.shape[-2] // p, p=p, q=p)
        pixels = rearrange(self.proj_out(pixels), "n h w p q c -> n c (h p) (w q)")
        return pixels + x


class FaceMotionBackbone(nn.Module):
    """FAN face network with patch attention: ``(N, 3, S, S)`` in [-1, 1] → ``(N, 512)``.

    The defaults are the official sizes (``S = 224``); smaller ones make small trainable encoders.
    """

    def __init__(
        self,
        face_size: int = FACE_SIZE,
        stem_channels: int = 64,
        mid_channels: int = 128,
        channels: int = 256,
        hourglass_depth: int = 4,
        landmarks: int = 68,
        attention_heads: int = 8,
        attention_head_dim: int = 128,
    ):
        super().__init__()
        attention = {"heads": attention_heads, "head_dim": attention_head_dim}
        self.conv1 = nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.conv2 = ConvBlock(stem_channels, mid_channels)
        self.conv3 = ConvBlock(mid_channels, mid_channels)
        self.conv4 = ConvBlock(mid_channels, channels)
        self.m0 = HourGlass(depth=hourglass_depth, channels=channels)
        self.top_m_0 = ConvBlock(channels, channels)
        self.conv_last0 = nn.Conv2d(channels, channels, kernel_size=1)
        self.bn_end0 = nn.BatchNorm2d(channels)
        self.l0 = nn.Conv2d(channels, landmarks, kernel_size=1)
        self.bn5 = nn.BatchNorm2d(landmarks)
        self.conv6 = nn.Conv2d(landmarks, 1, 3, stride=2, padding=1)
        self.fc = nn.Linear((face_size // 8) ** 2, 512)
        self.att_1 = PatchSelfAttention(mid_channels, sample_size=face_size // 2, patch_size=4, **attention)
        self.att_2 = PatchSelfAttention(channels, sample_size=face_size // 4, patch_size=2, **attention)
        self.att_3 = PatchSelfAttention(channels, sample_size=face_size // 4, patch_size=2, **attention)

    def heatmaps(self, faces: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` → landmark heatmaps ``(N, landmarks, S/4, S/4)``: the face-alignment part."""
        x = F.relu(self.bn1(self.conv1(faces)))
        x = self.att_1(self.conv2(x))
        x = self.conv4(self.conv3(F.max_pool2d(x, 2)))
        x = self.att_2(x)
        x = self.bn_end0(self.conv_last0(self.top_m_0(self.m0(x))))
        x = self.att_3(x)
        return F.relu(self.bn5(self.l0(F.relu(x))))

    def alignment_parameters(self) -> list[nn.Parameter]:
        """The parameters behind :meth:`heatmaps` (all but the head that reads the heatmaps)."""
        head = {id(p) for module in (self.conv6, self.fc) for p in module.parameters()}
        return [p for p in self.parameters() if id(p) not in head]

    def forward(self, faces):
        return self.fc(F.relu(self.conv6(self.heatmaps(faces)).flatten(1)))


class MotionEncoder(nn.Module):
    """Face crops → motion tokens.

    Shapes: ``faces (N, 3, S, S)`` in [-1, 1], ``box (N, 3)`` → ``(N, 32, 16)``; ``S`` is
    ``face_size`` (224 officially). X-NeMo inference always passes the neutral box ``[0, 0, 1]``
    (see :meth:`neutral_box`). ``backbone`` holds :class:`FaceMotionBackbone` sizes.
    """

    def __init__(self, **backbone):
        super().__init__()
        self.face_size = backbone.get("face_size", FACE_SIZE)
        self.model = FaceMotionBackbone(**backbone)
        table = get_1d_sincos_pos_embed_from_grid(TOKEN_DIM, torch.arange(NUM_TOKENS))
        self.register_buffer("pe", table.float().unsqueeze(0))
        self.bbox_proj = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Identity(), nn.Linear(64, 64))
        self.final_proj = nn.Linear(512 + 64, NUM_TOKENS * TOKEN_DIM)

    @property
    def dtype(self) -> torch.dtype:
        return self.final_proj.weight.dtype

    @staticmethod
    def neutral_box(count: int, **tensor_kwargs) -> torch.Tensor:
        return torch.tensor([0.0, 0.0, 1.0], **tensor_kwargs).expand(count, 3)

    def face_motion(self, faces: torch.Tensor) -> torch.Tensor:
        """The backbone's 512-d face-motion vector ``(N, 512)``, before the box fusion."""
        return self.model(faces)

    def fused_features(self, faces: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
        """The face-motion vector and the projected box, ``(N, 576)``: what ``final_proj`` reads."""
        if box is None:
            box = self.neutral_box(faces.shape[0], dtype=faces.dtype, device=faces.device)
        return torch.cat([self.face_motion(faces), self.bbox_proj(box)], dim=1)

    def forward(self, faces: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
        tokens = rearrange(self.final_proj(self.fused_features(faces, box)), "n (l c) -> n l c", c=TOKEN_DIM)
        return tokens + self.pe.to(tokens.dtype)
