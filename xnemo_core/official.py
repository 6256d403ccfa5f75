"""The official recipe's numbers (bytedance/x-nemo-inference's inference settings), written once:
the sampling settings' defaults (:mod:`~xnemo_core.pipeline`) and every model's recipe
(:mod:`~xnemo_core.recipes`) start from them. Named in the front ends' words: ``size`` (height and
width), ``cfg`` (guidance scale), ``crop`` (``detect``: find the face)."""

OFFICIAL = {
    "size": 512,
    "steps": 35,
    "cfg": 2.5,
    "denoise": 1.0,
    "crop": "detect",
    "context_overlap": 4,
    "decode_chunk": 25,
}
OFFICIAL_CONTEXT_FRAMES = 24
"""The official schedule's window length (the ``long`` schedule takes the position encoding's limit)."""
