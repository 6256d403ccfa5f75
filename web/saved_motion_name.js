// Save Motion Latent shows, on the node, the file name it wrote (what Load Motion Latent lists as "... [output]").
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "xnemo.SavedMotionName",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "SaveMotionLatent") return;
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      executed?.apply(this, arguments);
      this.xnemoSaved = (output?.text ?? []).join(", ");
      const needed = this.computeSize()[1] + 18; // a line below the widgets for the name
      if (this.size[1] < needed) this.setSize([this.size[0], needed]);
      this.setDirtyCanvas(true, false);
    };
    const draw = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      draw?.apply(this, arguments);
      if (!this.xnemoSaved || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.fillStyle = "#8c8";
      ctx.fillText("saved as " + this.xnemoSaved, 10, this.size[1] - 6);
      ctx.restore();
    };
  },
});
