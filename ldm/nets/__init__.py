"""Plain nn.Modules (no Lightning): autoencoder backbone, discriminators, UNet."""
