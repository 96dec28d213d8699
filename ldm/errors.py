"""Errors a user can fix: entry points print them as one line and exit non-zero."""


class UserError(Exception):
    """Bad input or configuration; the message says what is wrong and how to fix it."""


class DataError(UserError):
    """A dataset cannot be built from what the config points at."""


class ConfigError(UserError):
    """A config value is invalid or inconsistent with another."""


class Diverged(RuntimeError):
    """Training produced a non-finite loss; the run is recorded with status `diverged`."""


class NoEncoderError(UserError):
    """The autoencoder row has no encoder (a plain GAN), so it cannot map images to latents."""
