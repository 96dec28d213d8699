"""ldm: which autoencoders give latent diffusion a good latent space?"""

__version__ = "0.1.0"
