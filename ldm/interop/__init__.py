"""Other libraries' formats: `ldm.interop.diffusers` (UNet2DModel, the DDIM scheduler, the latent scale)."""
