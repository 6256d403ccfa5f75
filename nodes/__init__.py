"""ComfyUI layer: the only code that imports ``comfy`` or ``folder_paths``.

Node classes are registered here as they are added; each node only converts ComfyUI types and
calls :mod:`xnemo_core`.
"""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
