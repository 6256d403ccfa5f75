"""Training of X-NeMo: the motion encoder end to end with the diffusion model (stage 1, single
frames, supervised also by two GAN decoders of the motion latent), then temporal modules (stage 2)."""
