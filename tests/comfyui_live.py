"""Drive a real ComfyUI (server + its web frontend in headless Chromium) for the pack's workflows.

    python tests/comfyui_live.py generate URL      # (re)build workflows/*.json with the real frontend
    python tests/comfyui_live.py run URL [OVERRIDES_JSON]   # queue every workflow, print the results

Workflows are built by the frontend itself (LiteGraph nodes, ``app.graph.serialize()``), so they
pass its schema. Running converts each through ``app.graphToPrompt()`` and queues it on ``/prompt``.
Needs the ``playwright`` package and a Chromium (``CHROMIUM`` or ``/usr/bin/chromium``).
"""

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"

# Each workflow: nodes (key → type, position, widget values), links (from key, output slot, to key,
# input name), titled groups of node keys, a Note saying what it shows, and the saved view. Only
# this pack's nodes and ComfyUI core nodes, laid out left to right in columns 400 px apart. They
# default to the bundled model and the demo media the pack copies into ComfyUI's input folder, so
# they run as opened.
_OFFICIAL = (
    "For real portraits: put the official X-NeMo weights in models/xnemo and pick them in Load X-NeMo; "
    "nothing else changes. Steps, size and denoise at 0 and crop 'auto' take the loaded model's recipe "
    "(official: 512², 35 steps, face detection; bundled: 128², 25 steps, denoise 0.8). The bundled model "
    "knows only the synthetic faces it was trained on."
)


def _driver(suffix: str, clip: str, row: int) -> dict:
    return {
        f"video{suffix}": ("LoadVideo", [440, row], {"file": clip}),
        f"components{suffix}": ("GetVideoComponents", [840, row], {}),
        f"frames{suffix}": ("ImageFromBatch", [840, row + 160], {"batch_index": 0, "length": 240}),
        f"extract{suffix}": ("ExtractMotionLatent", [1240, row], {"crop": "auto"}),
    }


def _driver_links(suffix: str) -> list:
    return [
        (f"video{suffix}", 0, f"components{suffix}", "video"),
        (f"components{suffix}", 0, f"frames{suffix}", "image"),
        ("model", 0, f"extract{suffix}", "model"),
        (f"frames{suffix}", 0, f"extract{suffix}", "frames"),
    ]


_SOUND = ("components", 1, "create", "audio")
"""The driving clip's sound kept in the video, as ComfyUI's GetVideoComponents → CreateVideo does."""
_COMMON = {
    "note": ("Note", [40, 60], {}),
    "model": ("LoadXNeMo", [40, 480], {"model": "xnemo-synthetic-128", "precision": "auto"}),
    "portrait": ("LoadImage", [40, 680], {"image": "xnemo_demo_portrait.png"}),
    "animate": ("AnimatePortrait", [2040, 60], {"crop": "auto"}),
    "create": ("CreateVideo", [2440, 60], {"fps": 25}),
    "save": ("SaveVideo", [2440, 260], {"filename_prefix": "xnemo/animated"}),
}
_TAIL_LINKS = [
    ("model", 0, "animate", "model"),
    ("portrait", 0, "animate", "reference"),
    ("animate", 0, "create", "images"),
    ("create", 0, "save", "video"),
]
_GROUPS = [
    ("Model and portrait", ["model", "portrait"]),
    ("Driving video → motion latent", ["video", "components", "frames", "extract"]),
    ("Animation", ["animate"]),
    ("Video out", ["create", "save"]),
]
SPECS = {
    "xnemo_basic_animation": {
        "note": "The demo portrait animated with the facial motion of the demo driving clip: the driving face "
        "becomes a motion latent (32 × 16 tokens a frame) that carries no identity, and Animate Portrait "
        "renders the portrait with it.\n\n" + _OFFICIAL,
        "nodes": {**_driver("", "xnemo_demo_driving.mp4", 60), **_COMMON},
        "links": [*_driver_links(""), ("extract", 0, "animate", "motion"), *_TAIL_LINKS, _SOUND],
        "groups": _GROUPS,
    },
    "xnemo_blend_two_drivers": {
        "note": "Two different drivers, one motion: Motion Latent Blend interpolates the motion of the demo clip "
        "(A) and of a second person (B) half way, so the portrait moves like neither alone. Weight 0 is A, 1 is B; "
        "mode 'relative' instead adds B's change since its first frame on top of A.\n\n" + _OFFICIAL,
        "nodes": {
            **_driver("", "xnemo_demo_driving.mp4", 60),
            **_driver("_b", "xnemo_demo_driving_b.mp4", 520),
            **_COMMON,
            "blend": ("MotionLatentBlend", [1640, 60], {"mode": "interpolate", "weight": 0.5}),
        },
        "links": [
            *_driver_links(""),
            *_driver_links("_b"),
            ("extract", 0, "blend", "motion_a"),
            ("extract_b", 0, "blend", "motion_b"),
            ("blend", 0, "animate", "motion"),
            *_TAIL_LINKS,
            _SOUND,
        ],
        "groups": [
            *_GROUPS[:2],
            ("Second driver", ["video_b", "components_b", "frames_b", "extract_b"]),
            ("Blend → animation", ["blend", "animate"]),
            _GROUPS[3],
        ],
    },
    "xnemo_exaggerated_expression": {
        "note": "The driver's expressions made stronger: Motion Latent Blend in 'intensity' mode scales the motion "
        "around the first (neutral) frame by 1.6. Save Motion Latent keeps the edited motion in the output folder; "
        "Load Motion Latent lists it (marked [output]) to reuse in any workflow.\n\n" + _OFFICIAL,
        "nodes": {
            **_driver("", "xnemo_demo_driving.mp4", 60),
            **_COMMON,
            "intensity": ("MotionLatentBlend", [1640, 60], {"mode": "intensity", "weight": 1.6}),
            "save_motion": ("SaveMotionLatent", [1640, 520], {"filename_prefix": "xnemo/exaggerated"}),
        },
        "links": [
            *_driver_links(""),
            ("extract", 0, "intensity", "motion_a"),
            ("intensity", 0, "animate", "motion"),
            ("intensity", 0, "save_motion", "motion"),
            *_TAIL_LINKS,
            _SOUND,
        ],
        "groups": [*_GROUPS[:2], ("Edit, keep → animation", ["intensity", "save_motion", "animate"]), _GROUPS[3]],
    },
    "xnemo_reuse_saved_motion": {
        "note": "A motion saved in an earlier run animates a portrait with no video at all: Load Motion Latent "
        "reads the demo motion shipped with the pack (or any motion Save Motion Latent wrote, listed with "
        "[output], e.g. the exaggerated workflow's xnemo/exaggerated_00000.safetensors), smoothed over 2 frames "
        "here. A motion file works only with the model whose encoder made it.\n\n" + _OFFICIAL,
        "nodes": {
            **_COMMON,
            "load_motion": ("LoadMotionLatent", [440, 60], {"file": "xnemo_demo_motion.safetensors"}),
            "smooth": ("MotionLatentBlend", [840, 60], {"mode": "smooth", "sigma_frames": 2.0}),
            "animate": ("AnimatePortrait", [1240, 60], {"crop": "auto"}),
            "create": ("CreateVideo", [1640, 60], {"fps": 25}),
            "save": ("SaveVideo", [1640, 260], {"filename_prefix": "xnemo/animated"}),
        },
        "links": [("load_motion", 0, "smooth", "motion_a"), ("smooth", 0, "animate", "motion"), *_TAIL_LINKS],
        "groups": [_GROUPS[0], ("Saved motion", ["load_motion", "smooth"]), _GROUPS[2], _GROUPS[3]],
    },
    "xnemo_with_core_image_nodes": {
        "note": "X-NeMo among ComfyUI's own image nodes: the portrait is mirrored before animation (any image "
        "edit or generated portrait can go in here), and the animated frames are sharpened before the video is "
        "made. The pasted-back output and its mask serve your own compositing.\n\n" + _OFFICIAL,
        "nodes": {
            **_driver("", "xnemo_demo_driving.mp4", 60),
            **_COMMON,
            "mirror": ("ImageFlip", [40, 1100], {"flip_method": "y-axis: horizontally"}),
            "sharpen": ("ImageSharpen", [2440, 60], {"sharpen_radius": 1, "alpha": 0.5}),
            "create": ("CreateVideo", [2440, 280], {"fps": 25}),
            "save": ("SaveVideo", [2440, 460], {"filename_prefix": "xnemo/animated"}),
        },
        "links": [
            *_driver_links(""),
            ("extract", 0, "animate", "motion"),
            ("model", 0, "animate", "model"),
            ("portrait", 0, "mirror", "image"),
            ("mirror", 0, "animate", "reference"),
            ("animate", 0, "sharpen", "image"),
            ("sharpen", 0, "create", "images"),
            ("create", 0, "save", "video"),
            _SOUND,
        ],
        "groups": [
            ("Model and edited portrait", ["model", "portrait", "mirror"]),
            _GROUPS[1],
            _GROUPS[2],
            ("Post-process, video out", ["sharpen", "create", "save"]),
        ],
    },
}

SVD_XT = {
    "name": "svd_xt.safetensors",
    "url": "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt/resolve/main/svd_xt.safetensors",
    "directory": "checkpoints",
}
CLIP_VIT_L = {
    "name": "clip_vit_large_patch14.safetensors",
    "url": "https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/model.safetensors",
    "directory": "clip_vision",
}
SPECS["xnemo_with_comfyui_loaders"] = {
    "note": "The official X-NeMo model with the VAE and CLIP image encoder ComfyUI users often have already: the "
    "SVD VAE from svd_xt.safetensors (Image Only Checkpoint Loader's VAE output) and the OpenAI CLIP ViT-L/14 "
    "in models/clip_vision go into Load X-NeMo's vae and clip_vision inputs, so only X-NeMo's four files are "
    "needed in models/xnemo/xnemo (the Download X-NeMo Model node with 'X-NeMo files only', or python -m "
    "xnemo_core download DEST --parts xnemo). The loaders carry their files' links: ComfyUI offers to download "
    "a missing one (svd_xt is gated: accept its licence on the Hugging Face Hub first). Steps, size and denoise "
    "at 0 take the official recipe (512², 35 steps).",
    "nodes": {
        "note": ("Note", [40, 60], {}),
        "svd": ("ImageOnlyCheckpointLoader", [40, 480], {"ckpt_name": SVD_XT["name"]}),
        "clip": ("CLIPVisionLoader", [40, 700], {"clip_name": CLIP_VIT_L["name"]}),
        **_driver("", "xnemo_demo_driving.mp4", 60),
        "model": ("LoadXNeMo", [540, 560], {"model": "xnemo", "precision": "auto"}),
        "portrait": ("LoadImage", [540, 760], {"image": "xnemo_demo_portrait.png"}),
        "animate": ("AnimatePortrait", [1640, 60], {"crop": "auto"}),
        "create": ("CreateVideo", [2040, 60], {"fps": 25}),
        "save": ("SaveVideo", [2040, 260], {"filename_prefix": "xnemo/animated"}),
    },
    "models": {"svd": [SVD_XT], "clip": [CLIP_VIT_L]},
    "links": [
        ("svd", 2, "model", "vae"),
        ("clip", 0, "model", "clip_vision"),
        *_driver_links(""),
        ("extract", 0, "animate", "motion"),
        *_TAIL_LINKS,
        _SOUND,
    ],
    "groups": [
        ("ComfyUI's SVD VAE and CLIP ViT-L/14", ["svd", "clip"]),
        ("X-NeMo, portrait", ["model", "portrait"]),
        _GROUPS[1],
        _GROUPS[2],
        _GROUPS[3],
    ],
}
"""Runs with the user's own files only, not as shipped: the loaders' ``models`` entries name them."""

_BUILD_JS = """
(spec) => {
  app.graph.clear();
  const made = {};
  for (const [key, [type, pos, values]] of Object.entries(spec.nodes)) {
    const node = LiteGraph.createNode(type);
    if (!node) throw new Error("unknown node type " + type);
    node.pos = pos;
    app.graph.add(node);
    for (const [name, value] of Object.entries(values)) {
      const widget = node.widgets.find((w) => w.name === name);
      if (!widget) throw new Error(type + " has no widget " + name);
      widget.value = value;
    }
    made[key] = node;
  }
  for (const [key, models] of Object.entries(spec.models ?? {})) made[key].properties.models = models;
  made.note.widgets[0].value = spec.note;
  made.note.size = [360, 320];
  for (const [from, slot, to, input] of spec.links) {
    const target = made[to];
    const index = target.inputs.findIndex((i) => i.name === input);
    if (index < 0) throw new Error(target.type + " has no input " + input);
    made[from].connect(slot, target, index);
  }
  const pad = 20, title = 50, boxes = [];
  for (const [name, keys] of spec.groups) {
    const nodes = keys.map((key) => made[key]);
    const left = Math.min(...nodes.map((n) => n.pos[0])) - pad;
    const top = Math.min(...nodes.map((n) => n.pos[1])) - title - pad;
    const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + pad;
    const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + pad;
    const group = new LiteGraph.LGraphGroup(name);
    group.pos = [left, top];
    group.size = [right - left, bottom - top];
    app.graph.add(group);
    boxes.push([left, top]);
  }
  for (const node of Object.values(made)) boxes.push([node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT]);
  // the saved view: the graph's top-left corner just clear of the sidebar and the top bar
  app.canvas.ds.scale = spec.scale;
  app.canvas.ds.offset = [
    -Math.min(...boxes.map((b) => b[0])) + 70 / spec.scale,
    -Math.min(...boxes.map((b) => b[1])) + 90 / spec.scale,
  ];
  app.graph.setDirtyCanvas(true, true);
  return JSON.stringify(app.graph.serialize());  // a string: undefined fields must vanish, not become null
}
"""


def _browser(url: str):
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120_000)
    page.wait_for_timeout(2000)
    page.keyboard.press("Escape")  # the template browser opens on a first visit
    return playwright, browser, page, alerts


def _load(page, path: Path) -> None:
    """Open a workflow file as a user would; fail on the frontend's schema alert."""
    page.evaluate("(w) => app.loadGraphData(w)", json.loads(path.read_text()))
    page.wait_for_timeout(1500)
    invalid = page.get_by_text("Invalid workflow", exact=False)
    if invalid.count():
        raise ValueError(f"{path.name}: the frontend rejects it: {invalid.first.inner_text()[:500]}")


VIEW_SCALE = 0.62
"""The saved zoom: the whole graph on a 1920-pixel-wide screen, text still drawn."""


def generate(url: str) -> list[Path]:
    """Build each workflow in the frontend, save it, reopen it as a user would and screenshot its
    saved view (``workflows/NAME.png``: the template browser's thumbnail and the README's pictures)."""
    playwright, browser, page, _ = _browser(url)
    written = []
    try:
        page.set_viewport_size({"width": 1920, "height": 1080})
        for name, spec in SPECS.items():
            workflow = json.loads(page.evaluate(_BUILD_JS, {**spec, "scale": VIEW_SCALE}))
            path = WORKFLOWS / f"{name}.json"
            path.write_text(json.dumps(workflow, indent=2) + "\n")
            _load(page, path)
            page.keyboard.press("Escape")  # a template browser that opened late would cover the graph
            page.wait_for_timeout(500)
            page.screenshot(path=str(path.with_suffix(".png")))
            written.append(path)
    finally:
        browser.close()
        playwright.stop()
    return written


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        return json.load(urllib.request.urlopen(request))
    except urllib.error.HTTPError as error:
        return {"error": json.loads(error.read().decode())}


def run(url: str, overrides: dict, paths: list[Path] | None = None, timeout_s: float = 900) -> dict[str, dict]:
    """Open each workflow (default: the shipped ones) as a user would and queue it (with
    ``overrides``: node type → input values); by file name: the result, the prompt the frontend made
    and the X-NeMo nodes as it shows them (type, widget values by name, connected inputs)."""
    playwright, browser, page, alerts = _browser(url)
    results = {}
    try:
        for path in paths or sorted(WORKFLOWS.glob("*.json")):
            _load(page, path)
            shown = page.evaluate(_SHOWN_JS)
            prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
            queued = json.loads(json.dumps(prompt))
            for node in queued.values():
                node["inputs"].update(overrides.get(node["class_type"], {}))
            results[path.name] = queue_prompt(url, queued, timeout_s) | {"prompt": prompt, "shown": shown}
        results["_alerts"] = alerts
    finally:
        browser.close()
        playwright.stop()
    return results


_SHOWN_JS = """() => app.graph._nodes
  .filter((n) => n.type === "AnimatePortrait" || n.type.startsWith("XNeMo"))
  .map((n) => ({
    type: n.type,
    widgets: Object.fromEntries((n.widgets ?? []).map((w) => [w.name, w.value])),
    inputs: (n.inputs ?? []).map((i) => i.name),
    connected: (n.inputs ?? []).filter((i) => i.link != null).map((i) => i.name),
  }))"""


def saved_name_on_the_node(url: str, workflow: str, overrides: dict, timeout_s: float = 600) -> str | None:
    """Run a workflow from the frontend, as a user's Run does, and read what Save Motion Latent
    shows on the node afterwards (the pack's ``web/`` extension)."""
    playwright, browser, page, _ = _browser(url)
    try:
        _load(page, WORKFLOWS / f"{workflow}.json")
        page.evaluate(
            """(overrides) => { for (const node of app.graph.nodes)
                 for (const [name, value] of Object.entries(overrides[node.type] ?? {}))
                   node.widgets.find((w) => w.name === name).value = value; }""",
            overrides,
        )
        page.evaluate("async () => { await app.queuePrompt(0); }")
        shown = "() => app.graph.nodes.find((n) => n.type === 'SaveMotionLatent').xnemoSaved ?? null"
        deadline = time.time() + timeout_s
        while time.time() < deadline and not page.evaluate(shown):
            time.sleep(1)
        return page.evaluate(shown)
    finally:
        browser.close()
        playwright.stop()


def upload_on_the_node(url: str, motion_file: Path, timeout_s: float = 60) -> dict:
    """Upload a motion file with Load Motion Latent's button, as a user would, and read the node back:
    the button's label, the chosen file and what the saved workflow keeps of the node's widgets."""
    playwright, browser, page, _ = _browser(url)
    try:
        page.evaluate("() => { app.graph.clear(); app.graph.add(LiteGraph.createNode('LoadMotionLatent')); }")
        node = "app.graph.nodes.find((n) => n.type === 'LoadMotionLatent')"
        label = page.evaluate(f"() => {node}.widgets.find((w) => w.type === 'button')?.name ?? null")
        with page.expect_file_chooser() as chooser:
            page.evaluate(f"() => {node}.widgets.find((w) => w.type === 'button').callback()")
        chooser.value.set_files(str(motion_file))
        chosen = f"() => {node}.widgets.find((w) => w.name === 'file').value"
        deadline = time.time() + timeout_s
        while time.time() < deadline and page.evaluate(chosen) != motion_file.name:
            time.sleep(0.5)
        saved = page.evaluate(
            "() => app.graph.serialize().nodes.find((n) => n.type === 'LoadMotionLatent').widgets_values"
        )
        return {"button": label, "chosen": page.evaluate(chosen), "widgets_values": saved}
    finally:
        browser.close()
        playwright.stop()


def queue_prompt(url: str, prompt: dict, timeout_s: float = 900) -> dict:
    """Queue an API-format prompt and wait: status, execution errors (message, type, traceback), outputs."""
    queued = post(f"{url}/prompt", {"prompt": prompt})
    if "prompt_id" not in queued:
        return {"status": "rejected", "detail": queued}
    return outcome(url, queued["prompt_id"], timeout_s)


def outcome(url: str, prompt_id: str, timeout_s: float = 900) -> dict:
    """Wait for a queued prompt: its status, the kinds of its messages (``execution_interrupted``, …),
    its execution errors and its outputs."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        history = json.load(urllib.request.urlopen(f"{url}/history/{prompt_id}"))
        if prompt_id in history:
            status = history[prompt_id]["status"]
            return {
                "status": status["status_str"],
                "events": [m[0] for m in status["messages"]],
                "errors": [m[1] for m in status["messages"] if m[0] == "execution_error"],
                "outputs": history[prompt_id]["outputs"],
            }
        time.sleep(0.5)
    return {"status": "timeout"}


if __name__ == "__main__":
    command, address = sys.argv[1], sys.argv[2]
    if command == "generate":
        for written in generate(address):
            print(f"wrote {written}")
    else:
        print(json.dumps(run(address, json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}), indent=1))


def previews_during(url: str, prompt: dict, extra_data: dict, timeout_s: float = 600) -> dict:
    """Queue ``prompt`` as a websocket client and collect what the server sends it while it runs:
    the JSON messages' types (and ``VHS_latentpreview``'s data), and the binary previews (the event
    type and the first bytes of each)."""
    import asyncio
    import uuid

    import aiohttp

    client = uuid.uuid4().hex
    seen = {"types": [], "vhs": [], "binary": []}

    async def listen():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client}") as socket:
                queued = post(f"{url}/prompt", {"prompt": prompt, "client_id": client, "extra_data": extra_data})
                prompt_id = queued["prompt_id"]
                async for message in socket:
                    if message.type == aiohttp.WSMsgType.BINARY:
                        seen["binary"].append((int.from_bytes(message.data[:4], "big"), message.data[4:24]))
                        continue
                    data = json.loads(message.data)
                    seen["types"].append(data["type"])
                    if data["type"] == "VHS_latentpreview":
                        seen["vhs"].append(data["data"])
                    done = data["type"] == "executing" and data["data"].get("node") is None
                    if data["data"].get("prompt_id") == prompt_id and (done or data["type"] == "execution_error"):
                        return

    asyncio.run(asyncio.wait_for(listen(), timeout_s))
    return seen
