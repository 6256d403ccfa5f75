"""The ComfyUI nodes: thin wrappers of ``xnemo_core``; motion latents flow as ``XNEMO_MOTION``.

Inside ComfyUI the pack registers through ``comfy_entrypoint`` (V3 API); elsewhere
``NODE_CLASS_MAPPINGS`` holds classic classes of the same declarations.
"""

from .animate import ANIMATE_PORTRAIT
from .comfy_bridge import register_with_comfyui
from .declare import classic_node, v3_node
from .download import DOWNLOAD_XNEMO_MODEL
from .loader import LOAD_XNEMO
from .motion import EXTRACT_MOTION_LATENT, LOAD_MOTION_LATENT, MOTION_LATENT_BLEND, SAVE_MOTION_LATENT
from .options import CONTEXT_OPTIONS, SPEED_OPTIONS

try:  # the versioned V3 API, so that a ComfyUI update does not change what the nodes get
    from comfy_api.v0_0_2 import ComfyExtension, io
except ImportError:
    try:
        from comfy_api.latest import ComfyExtension, io
    except ImportError:  # outside ComfyUI, or a ComfyUI older than the V3 API
        ComfyExtension = io = None

NODES = (
    LOAD_XNEMO,
    EXTRACT_MOTION_LATENT,
    ANIMATE_PORTRAIT,
    CONTEXT_OPTIONS,
    SPEED_OPTIONS,
    MOTION_LATENT_BLEND,
    SAVE_MOTION_LATENT,
    LOAD_MOTION_LATENT,
    DOWNLOAD_XNEMO_MODEL,
)
NODE_CLASS_MAPPINGS = {node.node_id: classic_node(node) for node in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {node.node_id: node.display_name for node in NODES}

register_with_comfyui()

if io is not None:

    class XNeMoExtension(ComfyExtension):
        async def get_node_list(self) -> list[type]:
            return [v3_node(node, io) for node in NODES]

    async def comfy_entrypoint() -> XNeMoExtension:
        return XNeMoExtension()
