"""One LightningModule per row of the headline table, all implementing `Autoencoder`."""
