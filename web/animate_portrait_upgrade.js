// Workflows saved with an earlier Animate Portrait (up to 15 widgets) open unchanged: the frontend
// restores widget values by position, so each saved value is put back by the widget name the file
// records (a widget the file predates gets its default); values of widgets that moved to X-NeMo
// Context / Speed Options go to such a node, made and connected where they differ from its defaults,
// so the graph animates the same frames as before.
import { app } from "../../scripts/app.js";

const OPTIONS = { XNeMoContextOptions: "context_options", XNeMoSpeedOptions: "speed_options" };
const CONTROL = "control_after_generate";

// The saved widget values by name, from the names the file lists among the node's inputs (a seed's
// control-after-generate value follows the seed's).
function savedValues(info, controlled) {
  const values = info.widgets_values;
  if (!Array.isArray(values)) return null;
  const names = (info.inputs ?? []).filter((input) => input.widget).map((input) => input.name);
  const saved = {};
  let position = 0;
  for (const name of names) {
    if (position >= values.length) break;
    saved[name] = values[position++];
    if (controlled.has(name) && position < values.length) saved[`${name}:${CONTROL}`] = values[position++];
  }
  return saved;
}

app.registerExtension({
  name: "xnemo.AnimatePortraitUpgrade",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "AnimatePortrait") return;
    const configure = nodeType.prototype.configure;
    nodeType.prototype.configure = function (info) {
      // read the file's own layout first: configuring rewrites info.inputs to the node's current ones
      const controlled = new Set((this.widgets ?? []).filter((w) => w.linkedWidgets?.length).map((w) => w.name));
      const saved = savedValues(info, controlled);
      configure.apply(this, arguments);
      const current = new Set((this.widgets ?? []).map((w) => w.name));
      if (!saved || Object.keys(saved).every((name) => current.has(name.split(":")[0]))) return;
      const defaults = Object.fromEntries(LiteGraph.createNode(this.type).widgets.map((w) => [w.name, w.value]));
      for (const widget of this.widgets) {
        widget.value = widget.name in saved ? saved[widget.name] : defaults[widget.name]; // the file predates it
        for (const linked of widget.linkedWidgets ?? []) {
          const control = saved[`${widget.name}:${CONTROL}`];
          if (control !== undefined) linked.value = control;
        }
      }
      for (let index = this.inputs.length - 1; index >= 0; index--) {
        const input = this.inputs[index];
        if (input.widget && !current.has(input.widget.name) && input.link == null) this.removeInput(index);
      }
      this.xnemoMoved = Object.fromEntries(Object.entries(saved).filter(([name]) => !current.has(name.split(":")[0])));
    };
  },
  async afterConfigureGraph() {
    for (const node of app.graph._nodes.filter((n) => n.xnemoMoved)) {
      let row = 0;
      for (const [type, socket] of Object.entries(OPTIONS)) {
        if (node.getInputNode(node.findInputSlot(socket))) continue;
        const options = LiteGraph.createNode(type);
        const changed = options.widgets.filter(
          (w) => w.name in node.xnemoMoved && node.xnemoMoved[w.name] !== w.value,
        );
        if (!changed.length) continue;
        for (const widget of changed) widget.value = node.xnemoMoved[widget.name];
        options.pos = [node.pos[0] - options.size[0] - 40, node.pos[1] + row];
        row += options.size[1] + 40;
        app.graph.add(options);
        options.connect(0, node, node.findInputSlot(socket));
      }
      delete node.xnemoMoved;
    }
  },
});
