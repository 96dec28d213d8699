"""Gaussian diffusion (schedules, process, samplers, EMA) and the LatentDiffusion module.

Never imports ldm.autoencoders: the module sees only a `decode` callable and cached latents.
"""
