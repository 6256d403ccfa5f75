"""DownloadXNeMoModel: the official model fetched into ``models/xnemo/NAME`` when the user queues it
(:mod:`xnemo_core.download`); nothing else in the pack touches the network."""

import logging
import os

from xnemo_core import download as core
from xnemo_core.files import inside

from . import comfy_bridge
from .declare import Node, Socket

EVERYTHING = "X-NeMo files, CLIP image encoder and VAE"
XNEMO_ONLY = "X-NeMo files only (VAE and CLIP from ComfyUI's loaders)"
TINY_DECODER = "TAESD tiny decoder (into models/vae_approx, for Load VAE)"
PART_CHOICES = {EVERYTHING: core.PARTS, XNEMO_ONLY: ("xnemo",), TINY_DECODER: core.EXTRAS}
LICENCES = "\n".join(core.licences(core.PARTS + core.EXTRAS))


class _FileProgress:
    """ComfyUI's progress bar, a new one per file, and its Cancel button checked on every chunk."""

    def __init__(self):
        self.name, self.bar = None, None

    def __call__(self, name: str, done: int, total: int | None) -> None:
        if name != self.name:
            self.name, self.bar = name, comfy_bridge.Progress(total or 1)
        self.bar(done, total or done)


def download(name: str, parts: str, convert_to_safetensors: bool, accept_licences: bool, xnemo_from: str = "") -> dict:
    if not accept_licences:
        raise ValueError(f"Download X-NeMo Model: set accept_licences to true to accept them:\n{LICENCES}")
    if parts == TINY_DECODER:
        folder = comfy_bridge.vae_approx_folder()
    else:
        root = comfy_bridge.model_roots()[0]
        folder = inside(root, name.strip(), what="model name")
        if folder == root.resolve():
            raise ValueError("Download X-NeMo Model: give the model a name (its folder within models/xnemo)")
    downloaded = core.download(
        folder,
        PART_CHOICES[parts],
        xnemo_from=xnemo_from.strip() or None,
        token=os.environ.get("HF_TOKEN"),
        convert=convert_to_safetensors,
        report=_FileProgress(),
        say=logging.info,
    )
    text = (
        f"{downloaded.folder} is ready: pick '{downloaded.folder.name}' in Load X-NeMo (press R to refresh the lists)"
    )
    if parts == TINY_DECODER:
        text = (
            f"TAESD is in {downloaded.folder}: pick 'taesd' in ComfyUI's Load VAE (press R to refresh the lists) and "
            "connect it to Load X-NeMo's vae input to encode and decode with it (frame by frame: faster, some quality)"
        )
    elif "xnemo" not in downloaded.parts:
        text = f"{downloaded.folder} still lacks X-NeMo's files: queue this node with parts '{EVERYTHING}'"
    elif not downloaded.complete:
        text += "; connect ComfyUI's SVD VAE and CLIP ViT-L/14 to its vae and clip_vision inputs"
    logging.info(text)
    return {"ui": {"text": [text]}}


DOWNLOAD_XNEMO_MODEL = Node(
    "DownloadXNeMoModel",
    "Download X-NeMo Model",
    "Fetches the official X-NeMo model into models/xnemo/NAME when queued (Google Drive for X-NeMo's files, "
    "the Hugging Face Hub for the CLIP image encoder and the SVD VAE), then checks every file strictly. Files "
    "already there are kept; queue it again to resume. The SVD repository is gated: accept its licence on the "
    "Hub and set HF_TOKEN (or run `hf auth login`) before starting ComfyUI. Licences:\n" + LICENCES,
    download,
    inputs=(
        Socket("name", "STRING", default="xnemo", tooltip="the model's folder within models/xnemo"),
        Socket(
            "parts",
            "COMBO",
            default=EVERYTHING,
            options=tuple(PART_CHOICES),
            tooltip="everything, or X-NeMo's files only where ComfyUI has the SVD VAE and CLIP ViT-L/14 already; "
            "or the TAESD tiny decoder, for ComfyUI's Load VAE (the name is not used)",
        ),
        Socket(
            "convert_to_safetensors",
            "BOOLEAN",
            default=True,
            tooltip="write fp16 safetensors (no pickles, half the size) and remove the downloaded originals",
        ),
        Socket("accept_licences", "BOOLEAN", default=False, tooltip=LICENCES),
        Socket(
            "xnemo_from",
            "STRING",
            default="",
            optional=True,
            tooltip="empty: the official Google Drive folder; or a folder (or URL) holding the four xnemo_*.pth files",
        ),
    ),
    output_node=True,
)
