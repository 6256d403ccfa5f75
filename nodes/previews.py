"""Live previews of the frames Animate Portrait is sampling, through ComfyUI's own previewers.

At every step the pipeline hands over its predicted clean latents ``(F, C, h, w)``. ComfyUI's
previewer for the model's latent space (the user's preview setting decides: none, latent2rgb, or
TAESD where its decoder is in ``models/vae_approx``) turns one frame into the image the progress bar
shows, the next frame at the next step, so a run shows the clip frame by frame. Where the user turned
on VideoHelperSuite's animated previews, the frames go out as VHS sends them (a ``VHS_latentpreview``
announcement, then indexed JPEG frames on ComfyUI's binary preview channel at :data:`RATE` a second),
and play as a clip on the node.
"""

import io
import time

from . import comfy_bridge

RATE = 8
"""Frames a second of an animated preview (VideoHelperSuite's default)."""


class LivePreview:
    """The pipeline's ``on_preview``; :meth:`take` gives the progress bar its image."""

    def __init__(self, previewer, animated: "AnimatedPreview | None" = None):
        self.previewer, self.animated = previewer, animated
        self.frame, self.image = 0, None

    @classmethod
    def for_model(cls, model) -> "LivePreview | None":
        """Previews for ``model``'s latent space, or ``None`` where the user's setting is *none*
        (then the pipeline computes nothing for them)."""
        previewer = comfy_bridge.previewer(model.models.latent_rgb)
        if previewer is None:
            return None
        return cls(previewer, AnimatedPreview(previewer) if comfy_bridge.animated_previews_wanted() else None)

    def __call__(self, latents) -> None:
        if self.animated is not None:
            self.animated.send(latents)
            return
        index = self.frame % len(latents)
        self.image = self.previewer.decode_latent_to_preview_image("JPEG", latents[index : index + 1])
        self.frame += 1

    def take(self):
        """The preview of the latest step, once (``None`` when there is none to show)."""
        image, self.image = self.image, None
        return image


class AnimatedPreview:
    """VideoHelperSuite's animated previews: the frames of each step, at most :data:`RATE` a second
    since the last ones, continuing round the clip where the last step stopped."""

    def __init__(self, previewer, rate: int = RATE, clock=time.monotonic):
        self.previewer, self.rate, self.clock = previewer, rate, clock
        self.announced, self.next_frame, self.sent_until = False, 0, clock()

    def send(self, latents) -> None:
        frames, now = len(latents), self.clock()
        count = min(frames, int((now - self.sent_until) * self.rate))
        if not self.announced:  # the whole clip once, so that it plays from the first step
            comfy_bridge.send_event("VHS_latentpreview", {"length": frames, "rate": self.rate})
            self.announced, count = True, frames
        if count <= 0:
            return
        self.sent_until = now
        for offset in range(count):
            index = (self.next_frame + offset) % frames
            image = self.previewer.decode_latent_to_preview(latents[index : index + 1])
            comfy_bridge.send_preview_frame(index, _jpeg(image))
        self.next_frame = (self.next_frame + count) % frames


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
