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


class Interrupted(BaseException):
    """SIGTERM (a scheduler's time limit or preemption, `kill`) or SIGINT (Ctrl-C) reached the process: the run
    stops, records `status: interrupted` and exits 128 + the signal's number. A BaseException, so that no
    `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(f"stopped by {self.name}")
