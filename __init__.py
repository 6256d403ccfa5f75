"""ComfyUI entry point of the X-NeMo node pack: registers the nodes and the pack's small frontend
extension (``web/``: Save Motion Latent shows the name it wrote)."""

import sys
from pathlib import Path

# The library is imported as the top-level package ``xnemo_core`` (its CLI and tests do the same).
# Appended, not prepended, so that nothing here shadows ComfyUI's own top-level modules.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

from . import nodes  # noqa: E402

WEB_DIRECTORY = "./web"

# ComfyUI prefers NODE_CLASS_MAPPINGS when both exist, so only one is exported.
if hasattr(nodes, "comfy_entrypoint"):
    comfy_entrypoint = nodes.comfy_entrypoint
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
else:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
