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

# Each workflow: nodes (id → type, position, widget values) and links (from id, output slot, to id,
# input name). Only this pack's nodes and ComfyUI core nodes. They default to the bundled model and
# the demo media the pack copies into ComfyUI's input folder, so they run as opened.
_DRIVER = {
    "video": ("LoadVideo", [40, 300], {"file": "xnemo_demo_driving.mp4"}),
    "components": ("GetVideoComponents", [360, 300], {}),
    "frames": ("ImageFromBatch", [660, 300], {"batch_index": 0, "length": 240}),
}
_COMMON = {
    "portrait": ("LoadImage", [40, 640], {"image": "xnemo_demo_portrait.png"}),
    "model": ("LoadXNeMo", [40, 60], {"model": "xnemo-synthetic-128", "precision": "auto"}),
    "animate": ("AnimatePortrait", [1400, 300], {"steps": 25, "denoise": 0.8, "size": 128, "crop": "none"}),
    "create": ("CreateVideo", [1800, 300], {"fps": 25}),
    "save": ("SaveVideo", [2100, 300], {"filename_prefix": "xnemo/animated"}),
}
_DRIVER_LINKS = [
    ("video", 0, "components", "video"),
    ("components", 0, "frames", "image"),
    ("model", 0, "extract", "model"),
    ("frames", 0, "extract", "frames"),
]
_TAIL_LINKS = [
    ("model", 0, "animate", "model"),
    ("portrait", 0, "animate", "reference"),
    ("animate", 0, "create", "images"),
    ("create", 0, "save", "video"),
]
SPECS = {
    "xnemo_basic_animation": {
        "nodes": {**_DRIVER, **_COMMON, "extract": ("ExtractMotionLatent", [980, 300], {"crop": "none"})},
        "links": [
            *_DRIVER_LINKS,
            ("extract", 0, "animate", "motion"),
            *_TAIL_LINKS,
        ],
    },
    "xnemo_blend_two_drivers": {
        "nodes": {
            **_DRIVER,
            **_COMMON,
            "extract": ("ExtractMotionLatent", [980, 300], {"crop": "none"}),
            "video_b": ("LoadVideo", [40, 980], {"file": "xnemo_demo_driving.mp4"}),
            "components_b": ("GetVideoComponents", [360, 980], {}),
            "frames_b": ("ImageFromBatch", [660, 980], {"batch_index": 0, "length": 240}),
            "extract_b": ("ExtractMotionLatent", [980, 980], {"crop": "none"}),
            "blend": ("MotionLatentBlend", [1200, 600], {"mode": "interpolate", "weight": 0.5}),
        },
        "links": [
            *_DRIVER_LINKS,
            ("video_b", 0, "components_b", "video"),
            ("components_b", 0, "frames_b", "image"),
            ("model", 0, "extract_b", "model"),
            ("frames_b", 0, "extract_b", "frames"),
            ("extract", 0, "blend", "motion_a"),
            ("extract_b", 0, "blend", "motion_b"),
            ("blend", 0, "animate", "motion"),
            *_TAIL_LINKS,
        ],
    },
    "xnemo_exaggerated_expression": {
        "nodes": {
            **_DRIVER,
            **_COMMON,
            "extract": ("ExtractMotionLatent", [980, 300], {"crop": "none"}),
            "intensity": ("MotionLatentBlend", [1200, 600], {"mode": "intensity", "weight": 1.6}),
            "save_motion": ("SaveMotionLatent", [1400, 900], {"filename_prefix": "xnemo/exaggerated"}),
        },
        "links": [
            *_DRIVER_LINKS,
            ("extract", 0, "intensity", "motion_a"),
            ("intensity", 0, "animate", "motion"),
            ("intensity", 0, "save_motion", "motion"),
            *_TAIL_LINKS,
        ],
    },
}

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
  for (const [from, slot, to, input] of spec.links) {
    const target = made[to];
    const index = target.inputs.findIndex((i) => i.name === input);
    if (index < 0) throw new Error(target.type + " has no input " + input);
    made[from].connect(slot, target, index);
  }
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


def generate(url: str) -> list[Path]:
    playwright, browser, page, _ = _browser(url)
    written = []
    try:
        for name, spec in SPECS.items():
            workflow = json.loads(page.evaluate(_BUILD_JS, spec))
            path = WORKFLOWS / f"{name}.json"
            path.write_text(json.dumps(workflow, indent=2) + "\n")
            written.append(path)
        page.set_viewport_size({"width": 2600, "height": 1200})  # wide enough to fit the graph with its text
        _load(page, written[0])
        page.keyboard.press(".")  # the frontend's "fit view" shortcut
        page.wait_for_timeout(500)
        page.screenshot(path=str(WORKFLOWS / "xnemo_basic_animation.png"))
    finally:
        browser.close()
        playwright.stop()
    return written


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        return json.load(urllib.request.urlopen(request))
    except urllib.error.HTTPError as error:
        return {"error": json.loads(error.read().decode())}


def run(url: str, overrides: dict, timeout_s: float = 900) -> dict[str, dict]:
    """Queue every workflow (with ``overrides``: node type → widget values); results by file name."""
    playwright, browser, page, alerts = _browser(url)
    results = {}
    try:
        for path in sorted(WORKFLOWS.glob("*.json")):
            _load(page, path)
            prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
            for node in prompt.values():
                node["inputs"].update(overrides.get(node["class_type"], {}))
            results[path.name] = queue_prompt(url, prompt, timeout_s)
        results["_alerts"] = alerts
    finally:
        browser.close()
        playwright.stop()
    return results


def queue_prompt(url: str, prompt: dict, timeout_s: float = 900) -> dict:
    """Queue an API-format prompt and wait: status, execution errors (message, type, traceback), outputs."""
    queued = _post(f"{url}/prompt", {"prompt": prompt})
    if "prompt_id" not in queued:
        return {"status": "rejected", "detail": queued}
    prompt_id, deadline = queued["prompt_id"], time.time() + timeout_s
    while time.time() < deadline:
        history = json.load(urllib.request.urlopen(f"{url}/history/{prompt_id}"))
        if prompt_id in history:
            status = history[prompt_id]["status"]
            errors = [m[1] for m in status["messages"] if m[0] == "execution_error"]
            return {"status": status["status_str"], "errors": errors, "outputs": history[prompt_id]["outputs"]}
        time.sleep(1)
    return {"status": "timeout"}


if __name__ == "__main__":
    command, address = sys.argv[1], sys.argv[2]
    if command == "generate":
        for written in generate(address):
            print(f"wrote {written}")
    else:
        print(json.dumps(run(address, json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}), indent=1))
