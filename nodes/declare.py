"""Nodes declared as data, then rendered for ComfyUI.

Inside ComfyUI (v0.3.4x and later, v0.8.0 included) the nodes are V3 ``io.ComfyNode`` classes of
the versioned ``comfy_api.v0_0_2`` (``latest`` where that is absent), which ComfyUI recommends for new packs. Where that API is absent (older
ComfyUI, the tests) the same declarations become classic ``NODE_CLASS_MAPPINGS`` classes.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CATEGORY = "X-NeMo"
SEARCH_ALIASES = ("portrait animation", "face reenactment", "expression transfer", "liveportrait")
"""What users type into the node search to find a pack like this one (every node carries them)."""
WIDGETS = ("INT", "FLOAT", "BOOLEAN", "STRING", "COMBO")


@dataclass(frozen=True)
class Socket:
    """One input (a link or a widget) or one output of a node."""

    name: str
    kind: str
    """ComfyUI type name (``IMAGE``, ``XNEMO_MOTION``, …), or a widget kind (:data:`WIDGETS`)."""
    default: Any = None
    options: tuple[str, ...] | Callable[[], list[str]] = ()
    """COMBO choices, or a function listing them each time the node list is built."""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    tooltip: str | None = None
    optional: bool = False
    randomize: bool = False
    """Show ComfyUI's control-after-generate widget (seeds)."""

    def choices(self) -> list[str]:
        return list(self.options() if callable(self.options) else self.options)


@dataclass(frozen=True)
class Node:
    node_id: str
    display_name: str
    description: str
    run: Callable[..., tuple | dict]
    """Called with the inputs by name; returns the outputs as a tuple, or ``{"ui": …}`` for output nodes."""
    inputs: tuple[Socket, ...]
    outputs: tuple[Socket, ...] = ()
    output_node: bool = False


def classic_node(node: Node) -> type:
    """A classic (``INPUT_TYPES`` / ``RETURN_TYPES``) node class."""

    def input_types(cls):
        sections = {"required": {}, "optional": {}}
        for socket in node.inputs:
            sections["optional" if socket.optional else "required"][socket.name] = _classic_input(socket)
        return {section: entries for section, entries in sections.items() if entries}

    def execute(self, **inputs):
        return node.run(**inputs)

    return type(
        node.node_id,
        (),
        {
            "CATEGORY": CATEGORY,
            "DESCRIPTION": node.description,
            "RETURN_TYPES": tuple(output.kind for output in node.outputs),
            "RETURN_NAMES": tuple(output.name for output in node.outputs),
            "OUTPUT_TOOLTIPS": tuple(output.tooltip for output in node.outputs),
            "OUTPUT_NODE": node.output_node,
            "SEARCH_ALIASES": list(SEARCH_ALIASES),
            "FUNCTION": "execute",
            "INPUT_TYPES": classmethod(input_types),
            "execute": execute,
        },
    )


def _classic_input(socket: Socket) -> tuple:
    options = {
        key: value
        for key, value in (
            ("default", socket.default),
            ("min", socket.minimum),
            ("max", socket.maximum),
            ("step", socket.step),
            ("tooltip", socket.tooltip),
            ("control_after_generate", socket.randomize or None),
        )
        if value is not None
    }
    kind = socket.choices() if socket.kind == "COMBO" else socket.kind
    return (kind, options) if options else (kind,)


def v3_node(node: Node, io) -> type:
    """A ``comfy_api`` V3 node class; ``io`` is ``comfy_api.v0_0_2.io`` (or ``latest``'s)."""

    # search_aliases came after ComfyUI v0.8.0: passed where its Schema knows them
    aliases = {"search_aliases": list(SEARCH_ALIASES)} if "search_aliases" in _fields(io.Schema) else {}

    def define_schema(cls):
        return io.Schema(
            **aliases,
            node_id=node.node_id,
            display_name=node.display_name,
            category=CATEGORY,
            description=node.description,
            inputs=[_v3_input(socket, io) for socket in node.inputs],
            outputs=[
                _v3_type(output.kind, io).Output(output.name, display_name=output.name, tooltip=output.tooltip)
                for output in node.outputs
            ],
            is_output_node=node.output_node,
        )

    def execute(cls, **inputs):
        result = node.run(**inputs)
        if isinstance(result, dict):
            return io.NodeOutput(ui=result.get("ui"))
        return io.NodeOutput(*result)

    return type(
        node.node_id,
        (io.ComfyNode,),
        {"define_schema": classmethod(define_schema), "execute": classmethod(execute)},
    )


def _fields(schema) -> set[str]:
    return {field.name for field in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else set()


def _v3_type(kind: str, io):
    builtin = {
        "INT": io.Int,
        "FLOAT": io.Float,
        "BOOLEAN": io.Boolean,
        "STRING": io.String,
        "COMBO": io.Combo,
        "IMAGE": io.Image,
        "MASK": io.Mask,
        "VAE": io.Vae,
        "CLIP_VISION": io.ClipVision,
    }
    return builtin[kind] if kind in builtin else io.Custom(kind)


def _v3_input(socket: Socket, io):
    common = {"optional": socket.optional, "tooltip": socket.tooltip}
    if socket.kind == "COMBO":
        return io.Combo.Input(socket.name, options=socket.choices(), default=socket.default, **common)
    if socket.kind in ("INT", "FLOAT"):
        numeric = {"default": socket.default, "min": socket.minimum, "max": socket.maximum, "step": socket.step}
        if socket.randomize:
            numeric["control_after_generate"] = True
        return _v3_type(socket.kind, io).Input(socket.name, **numeric, **common)
    if socket.kind in ("BOOLEAN", "STRING"):
        return _v3_type(socket.kind, io).Input(socket.name, default=socket.default, **common)
    return _v3_type(socket.kind, io).Input(socket.name, **common)
