"""The names the front ends offer (command-line flags, node menus), importable without torch so
that ``python -m xnemo_core --help`` answers at once. The modules that act on these names import
them from here."""

COMPILE_MODES = ("auto", "on", "off")
PRECISIONS = ("bf16", "fp16", "fp32")
CROP_MODES = ("detect", "none")
SCHEDULES = ("official", "long")
SAMPLER_NAMES = ("ddim", "dpm++2m", "unipc")
MODEL_SIZES = ("tiny", "small", "official")
"""Sizes of the rule-made models ``synthesize`` writes."""
DEFAULT_SEED = 42

SPEED_PRESETS = {
    "exact": {"sampler": "ddim", "guidance_until": 1.0, "deep_cache_interval": 1},
    "balanced": {"sampler": "unipc", "steps": 20, "guidance_until": 1.0, "deep_cache_interval": 2},
    "fast": {"sampler": "unipc", "steps": 6, "guidance_until": 1.0, "deep_cache_interval": 1},
    "turbo": {"sampler": "unipc", "steps": 4, "guidance_until": 0.5, "deep_cache_interval": 1},
}
"""Preset name → its settings. ``exact`` is the official sampling and keeps the model's recipe steps;
the others are points of the speed–quality frontier (``bench/frontier.py``, README: Speed presets)."""


def preset_settings(preset: str) -> dict:
    """A preset's settings, by field name of ``AnimationSettings``."""
    if preset not in SPEED_PRESETS:
        raise ValueError(f"unknown speed preset {preset!r}; choose one of {', '.join(SPEED_PRESETS)}")
    return dict(SPEED_PRESETS[preset])


def describe_preset(preset: str) -> str:
    """A preset in words, e.g. ``unipc, 12 steps, guidance on the first 50 % of steps, …``."""
    settings = preset_settings(preset)
    words = [settings["sampler"] + (" (official)" if settings["sampler"] == "ddim" else "")]
    words.append(f"{settings['steps']} steps" if "steps" in settings else "the model's recipe steps")
    if settings["guidance_until"] < 1:
        words.append(f"guidance on the first {settings['guidance_until']:.0%} of steps")
    if settings["deep_cache_interval"] > 1:
        words.append(f"whole denoiser every {settings['deep_cache_interval']} steps, deep features reused between")
    return ", ".join(words)


DOWNLOAD_PARTS = ("xnemo", "image_encoder", "vae")
"""What ``python -m xnemo_core download --parts`` fetches by default: the X-NeMo release's four
files, the CLIP image encoder, the VAE (:mod:`~xnemo_core.download`): the model."""
DOWNLOAD_EXTRAS = ("tiny_decoder",)
"""Parts fetched only when named: the tiny decoder (TAESD), for decoding faster (``--tiny-decoder``)."""


def command_name() -> str:
    """How the user called the command line: ``xnemo`` (the installed command) or ``python -m xnemo_core``."""
    import sys
    from pathlib import Path

    return "xnemo" if Path(sys.argv[0]).stem == "xnemo" else "python -m xnemo_core"
