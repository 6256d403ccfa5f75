"""What the ComfyUI Registry and Manager read from the pack: its name, icon and the nodes' search aliases."""

import re
from pathlib import Path

import cv2
import tomllib

import nodes
from nodes.declare import SEARCH_ALIASES

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_project_name_follows_the_registrys_naming_rule():
    name = PROJECT["project"]["name"]
    assert "comfyui" not in name.lower() and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", name)
    assert PROJECT["tool"]["comfy"]["PublisherId"] and PROJECT["tool"]["comfy"]["DisplayName"]


def test_the_icon_is_a_square_picture_of_this_repository():
    icon = PROJECT["tool"]["comfy"]["Icon"]
    repository = PROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repository}/main/"
    assert icon.startswith(prefix)
    picture = cv2.imread(str(ROOT / icon.removeprefix(prefix)))
    assert picture is not None and picture.shape[0] == picture.shape[1] >= 400


def test_every_node_is_found_by_what_users_search_for():
    assert {"portrait animation", "face reenactment", "expression transfer", "liveportrait"} <= set(SEARCH_ALIASES)
    for node in nodes.NODE_CLASS_MAPPINGS.values():
        assert list(node.SEARCH_ALIASES) == list(SEARCH_ALIASES)


def fake_io(schema_fields: str):
    """A V3 ``io`` module stand-in whose ``Schema`` has ``schema_fields`` (as ComfyUI's versions differ)."""
    import dataclasses
    from types import SimpleNamespace

    socket = SimpleNamespace(Input=lambda *args, **options: (args, options), Output=lambda *args, **options: args)
    schema = dataclasses.make_dataclass("Schema", [(name, object, None) for name in schema_fields.split()])
    kinds = ("Int", "Float", "Boolean", "String", "Combo", "Image", "Mask", "Vae", "ClipVision")
    return SimpleNamespace(Schema=schema, ComfyNode=object, Custom=lambda kind: socket, **dict.fromkeys(kinds, socket))


def test_v3_nodes_carry_the_aliases_where_comfyuis_schema_has_them():
    from nodes.declare import v3_node

    common = "node_id display_name category description inputs outputs is_output_node"
    newer = v3_node(nodes.NODES[0], fake_io(common + " search_aliases")).define_schema()
    assert newer.search_aliases == list(SEARCH_ALIASES)
    v0_8 = v3_node(nodes.NODES[0], fake_io(common)).define_schema()  # ComfyUI v0.8.0: no such field
    assert not hasattr(v0_8, "search_aliases") and v0_8.node_id == nodes.NODES[0].node_id
