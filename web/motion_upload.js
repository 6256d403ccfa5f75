// Load Motion Latent gets an upload button, as Load Image has: the chosen .safetensors goes to
// ComfyUI's input folder (through its own /upload/image route) and becomes the node's choice.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

async function upload(file, combo) {
  const body = new FormData();
  body.append("image", file);
  body.append("type", "input");
  const response = await api.fetchApi("/upload/image", { method: "POST", body });
  if (response.status !== 200) {
    alert(`X-NeMo: uploading ${file.name} failed (${response.status} ${response.statusText})`);
    return;
  }
  const saved = await response.json();
  const name = saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
  if (!combo.options.values.includes(name)) combo.options.values.push(name);
  combo.value = name;
  combo.callback?.(name);
}

app.registerExtension({
  name: "xnemo.MotionUpload",
  nodeCreated(node) {
    if (node.comfyClass !== "LoadMotionLatent") return;
    const combo = node.widgets.find((w) => w.name === "file");
    const chooser = Object.assign(document.createElement("input"), {
      type: "file",
      accept: ".safetensors",
      style: "display: none",
    });
    chooser.dataset.xnemoMotionUpload = "";
    chooser.onchange = () => chooser.files.length && upload(chooser.files[0], combo).finally(() => (chooser.value = ""));
    document.body.append(chooser);
    const button = node.addWidget("button", "choose motion file to upload", null, () => chooser.click());
    button.serialize = false;
    button.options.serialize = false;
    const removed = node.onRemoved;
    node.onRemoved = function () {
      chooser.remove();
      return removed?.apply(this, arguments);
    };
  },
});
