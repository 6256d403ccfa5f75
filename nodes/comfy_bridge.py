"""The few ComfyUI services the nodes use, with plain fallbacks so the nodes also run (and are
tested) without ComfyUI: model folders, device and VRAM management, progress, interruption."""

import os
from pathlib import Path

import torch
from torch import nn

from xnemo_core import bundled
from xnemo_core.compiling import release_compiled, use_cache_folder
from xnemo_core.files import copy_if_missing
from xnemo_core.memory import module_bytes, usable_gpu_memory

try:
    import comfy.latent_formats
    import comfy.model_management as model_management
    import comfy.model_patcher
    import comfy.utils
    import comfy_execution.utils
    import folder_paths
    import latent_preview
    import server
    from comfy.patcher_extension import CallbacksMP
except ImportError:  # outside ComfyUI
    model_management = folder_paths = latent_preview = None

MODEL_FOLDER = "xnemo"
MODEL_SUFFIXES = (".safetensors",)


DEMO_INPUTS = {
    bundled.DEMO_PORTRAIT: "xnemo_demo_portrait.png",
    bundled.DEMO_DRIVING: "xnemo_demo_driving.mp4",
    bundled.DEMO_DRIVING_B: "xnemo_demo_driving_b.mp4",
    bundled.DEMO_MOTION: "xnemo_demo_motion.safetensors",
}
"""The bundled demo media, by the name the example workflows load them under from ComfyUI's input folder."""


def register_with_comfyui() -> None:
    """Inside ComfyUI: ``models/xnemo`` (and any ``xnemo:`` entry of extra_model_paths.yaml), then
    the bundled model's folder, for ``LoadXNeMo``; the demo media in the input folder."""
    if folder_paths is None:
        return
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    folder_paths.add_model_folder_path(MODEL_FOLDER, str(bundled.MODEL_ROOT))
    use_cache_folder(Path(folder_paths.get_user_directory()) / "xnemo" / "compiled")
    install_demo_inputs()


def install_demo_inputs() -> list[Path]:
    """Copy the demo portrait and driving clip into the input folder where nothing of that name is
    (a file, a folder or a symlink is left as it is), so that the example workflows run as opened;
    returns the files copied."""
    inputs = directory("input")
    inputs.mkdir(parents=True, exist_ok=True)
    return [inputs / name for source, name in DEMO_INPUTS.items() if copy_if_missing(source, inputs / name)]


def model_roots() -> list[Path]:
    if folder_paths is not None:
        return [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
    return [Path(os.environ.get("XNEMO_MODELS", "models/xnemo")), bundled.MODEL_ROOT]


def vae_approx_folder() -> Path:
    """ComfyUI's ``models/vae_approx`` (where its Load VAE finds TAESD); outside ComfyUI, the
    sibling of the first model root."""
    if folder_paths is not None:
        return Path(folder_paths.get_folder_paths("vae_approx")[0])
    return model_roots()[0].parent / "vae_approx"


def model_choices() -> dict[str, Path]:
    """Model folders and bundle files found in the model roots, by the name shown in the dropdown."""
    found = {}
    for root in model_roots():
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):  # hidden: e.g. a download still in progress
                continue
            if (entry.is_dir() and any(entry.iterdir())) or entry.suffix in MODEL_SUFFIXES:
                found.setdefault(entry.name, entry)
    return found


def directory(kind: str) -> Path:
    """ComfyUI's ``input`` or ``output`` folder (the working directory's outside ComfyUI)."""
    if folder_paths is None:
        return Path(kind)
    return Path(folder_paths.get_input_directory() if kind == "input" else folder_paths.get_output_directory())


def torch_device() -> torch.device:
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def total_memory(device: torch.device) -> int:
    """Bytes the compute ``device`` can hold, as ComfyUI reports it (it honours ``--reserve-vram``)."""
    if model_management is not None:
        return int(model_management.get_total_memory(device)) - int(model_management.extra_reserved_memory())
    return usable_gpu_memory(device)


def auto_precision(device: torch.device) -> str:
    if device.type == "cpu":
        return "fp32"
    if model_management is not None:
        if model_management.should_use_bf16(device):
            return "bf16"
        return "fp16" if model_management.should_use_fp16(device) else "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class XNeMo(nn.ModuleDict):
    """Every module of one X-NeMo model, as the one model ComfyUI's model management moves (and
    names in its log by this class)."""


class ManagedModules:
    """Lets ComfyUI's model management move our modules on and off the GPU like its own models."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.container = XNeMo(modules)
        self.size = module_bytes(self.container)
        self.patcher = None
        if model_management is not None:
            self.patcher = comfy.model_patcher.ModelPatcher(
                self.container,
                load_device=model_management.get_torch_device(),
                offload_device=model_management.unet_offload_device(),
                size=self.size,
            )
            # Unloaded by ComfyUI (another model needs the room, /free): compiled code and CUDA graphs go too.
            self.patcher.add_callback(CallbacksMP.ON_DETACH, lambda *_: self.forget_compiled())

    def forget_compiled(self) -> None:
        release_compiled(self.container["denoising_unet"])

    def load(self) -> torch.device:
        """Bring every module to the compute device (other models are unloaded if VRAM is short)."""
        device = torch_device()
        if self.patcher is not None:
            model_management.load_models_gpu([self.patcher], force_full_load=True)
        else:
            self.container.to(device)
        return device

    def place_for_one_part(self) -> tuple[torch.device, bool]:
        """``(device, offload)`` for a pipeline that runs one small module (the motion encoder).
        Where the model is on a GPU already (ComfyUI holds it) it runs there; where the model waits
        on the CPU that module alone visits the device, so that 62 M parameters do not bring 3 B
        into VRAM."""
        if next(self.container.parameters()).device.type == "cpu":
            return torch_device(), True
        return self.load(), False

    def make_room(self) -> torch.device:
        """For a low-VRAM run: our modules back on the CPU and ComfyUI's other models unloaded, so
        that the pipeline can bring one module at a time to the compute device."""
        self.release()
        if model_management is not None:
            model_management.unload_all_models()
            model_management.soft_empty_cache()
        return torch_device()

    def release(self) -> None:
        if self.patcher is None:
            self.forget_compiled()
            self.container.to("cpu")
            return
        loaded = model_management.current_loaded_models
        for index, entry in enumerate(loaded):
            if entry.model is self.patcher:
                loaded.pop(index).model_unload()
                break
        model_management.soft_empty_cache()


class Progress:
    """ComfyUI progress bar plus interruption check, as a pipeline step callback; with ``preview``
    (a :class:`~nodes.previews.LivePreview`), each step's preview image rides on the bar."""

    def __init__(self, total: int, preview=None):
        self.bar = comfy.utils.ProgressBar(total) if model_management is not None else None
        self.preview = preview

    def __call__(self, done: int, total: int) -> None:
        if model_management is not None:
            model_management.throw_exception_if_processing_interrupted()
        image = self.preview.take() if self.preview is not None else None
        if self.bar is not None:
            self.bar.update_absolute(done, total, image)


def previewer(latent_rgb):
    """ComfyUI's previewer, by the user's preview setting, for a model's latent space: Stable
    Diffusion's (``latent_rgb`` ``None``: ComfyUI's factors, TAESD where installed) or a VAE's own
    (its fitted factors); ``None`` outside ComfyUI or where previews are off. VideoHelperSuite's
    wrapper is skipped: animated previews are sent here (:mod:`nodes.previews`)."""
    if latent_preview is None:
        return None
    if latent_rgb is None:
        latent_format = comfy.latent_formats.SD15()
    else:
        latent_format = comfy.latent_formats.LatentFormat()
        latent_format.latent_channels = len(latent_rgb.factors)
        latent_format.latent_rgb_factors = [list(row) for row in latent_rgb.factors]
        latent_format.latent_rgb_factors_bias = list(latent_rgb.bias)
        latent_format.taesd_decoder_name = None
    unwrapped = getattr(latent_preview.get_previewer, "__wrapped__", latent_preview.get_previewer)
    return unwrapped(torch_device(), latent_format)


def animated_previews_wanted() -> bool:
    """Whether the running prompt's workflow asks for VideoHelperSuite's animated previews (its
    setting, saved in the workflow's ``extra``)."""
    if latent_preview is None:
        return False
    try:
        running = next(iter(server.PromptServer.instance.prompt_queue.currently_running.values()))
        return bool(running[3]["extra_pnginfo"]["workflow"]["extra"].get("VHS_latentpreview"))
    except (AttributeError, LookupError, StopIteration, TypeError):
        return False


def send_event(name: str, data: dict) -> None:
    """A JSON message to the client that queued the running prompt, with the node that sends it."""
    instance = server.PromptServer.instance
    instance.send_sync(name, data | {"id": _running_node()}, instance.client_id)


def send_preview_frame(index: int, jpeg: bytes) -> None:
    """Frame ``index`` of an animated preview on ComfyUI's binary preview channel, headed as
    VideoHelperSuite's are (image type, its marker, the frame's index)."""
    instance = server.PromptServer.instance
    header = b"".join(value.to_bytes(4, "big") for value in (1, 1, index))
    instance.send_sync(server.BinaryEventTypes.PREVIEW_IMAGE, header + jpeg, instance.client_id)


def _running_node() -> str | None:
    context = comfy_execution.utils.get_executing_context()
    return context.node_id if context is not None else server.PromptServer.instance.last_node_id
