"""Model configurations: the official full size and any other size, as plain data.

A configuration is what a checkpoint needs besides its tensors: the diffusers
``UNet2DConditionModel`` config shared by the reference and denoising UNets, and the official
``unet_additional_kwargs`` that add motion and temporal modules to the denoiser, and the motion
encoder's sizes. Configurations travel inside converted safetensors files as JSON metadata.
"""

import json
from dataclasses import asdict, dataclass, field

SD_IMAGE_VARIATIONS_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": False,
}

XNEMO_FRAME_MODULES = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "cross_attention_dim": 16,
        "attention_block_types": ["Spatial_Cross", "Spatial_Cross"],
        "temporal_position_encoding": False,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
    "use_temporal_module": True,
    "temporal_module_type": "Vanilla",
    "temporal_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
}

VAE_SCALING_FACTOR = 0.18215

# Configs assumed for single weight files that carry none (sd-image-variations' image encoder
# and the SVD-xt VAE, as the official recipe uses them).
CLIP_IMAGE_ENCODER = {
    "hidden_act": "quick_gelu",
    "hidden_size": 1024,
    "image_size": 224,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
}

SVD_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "out_channels": 3,
    "sample_size": 768,
    "scaling_factor": VAE_SCALING_FACTOR,
}


# A tiny configuration of every part for tests and examples on any CPU (seconds per clip).
TINY_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 32, 64, 64],
    "attention_head_dim": 2,
    "norm_num_groups": 32,
    "cross_attention_dim": 64,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TINY_CLIP_IMAGE_ENCODER = {
    **CLIP_IMAGE_ENCODER,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "projection_dim": 64,
}
TINY_MOTION_ENCODER = {
    "face_size": 64,
    "stem_channels": 32,
    "mid_channels": 32,
    "channels": 32,
    "hourglass_depth": 2,
    "landmarks": 16,
    "attention_heads": 2,
    "attention_head_dim": 32,
}
# The model shipped in the pack (trained on the synthetic face world at 128²): wider UNets.
SMALL_UNET = {**TINY_UNET, "block_out_channels": [64, 64, 64, 64]}
SMALL_VAE = {**SVD_VAE, "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "sample_size": 128}
TINY_VAE = {**SVD_VAE, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 32}


@dataclass
class XNeMoConfig:
    """Sizes of the two UNets and the motion encoder; ``official()`` is the published model."""

    unet: dict = field(default_factory=lambda: dict(SD_IMAGE_VARIATIONS_UNET))
    frame_modules: dict = field(default_factory=lambda: json.loads(json.dumps(XNEMO_FRAME_MODULES)))
    motion_encoder: dict = field(default_factory=dict)
    """``MotionEncoder`` sizes (empty for the official ones), or ``SpatialMotionGuider`` sizes."""
    motion_guidance: str = "tokens"
    """``tokens``: X-NeMo's 1-D motion latent through cross-attention; ``spatial``: a pose-guider
    style map of the driving frame added to the denoiser's input features (comparison models)."""

    @classmethod
    def official(cls) -> "XNeMoConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "XNeMoConfig":
        return cls(unet=dict(TINY_UNET), motion_encoder=dict(TINY_MOTION_ENCODER))

    @classmethod
    def small(cls) -> "XNeMoConfig":
        return cls(unet=dict(SMALL_UNET), motion_encoder=dict(TINY_MOTION_ENCODER))

    def with_spatial_guidance(self, face_size: int) -> "XNeMoConfig":
        """The same UNets with a spatial motion guider in place of the motion encoder."""
        guider = {"face_size": face_size, "channels": [16, 32, 64], "out_channels": self.unet["block_out_channels"][0]}
        return XNeMoConfig(self.unet, self.frame_modules, guider, motion_guidance="spatial")

    @property
    def max_window(self) -> int:
        """Longest context window the temporal position encoding allows."""
        return self.frame_modules["temporal_module_kwargs"]["temporal_position_encoding_max_len"]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "XNeMoConfig":
        return cls(
            unet=data["unet"],
            frame_modules=data["frame_modules"],
            motion_encoder=data.get("motion_encoder", {}),
            motion_guidance=data.get("motion_guidance", "tokens"),
        )
