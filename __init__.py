"""ComfyUI entry point of the X-NeMo node pack: registers the nodes, nothing else."""

import sys
from pathlib import Path

# The library is imported as the top-level package ``xnemo_core`` (its CLI and tests do the same).
# Appended, not prepended, so that nothing here shadows ComfyUI's own top-level modules.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
