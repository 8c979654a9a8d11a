"""The one error hierarchy. Every failure a user can meet is an SdtuiError whose class decides
the exit code; its message is one line that says what is wrong and how to fix it."""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_DEPLOYMENT = 3
EXIT_GENERATION = 4
EXIT_INTERRUPTED = 130


class SdtuiError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message


class BadInput(SdtuiError):
    """Rejected before anything was created or sent."""

    exit_code = EXIT_BAD_INPUT


class BadSetting(BadInput):
    """Bad input in one named setting (a settings or request field): a form shows it under
    that field."""

    def __init__(self, setting: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.setting = setting


class NoCredentials(BadInput):
    """No usable AWS credentials (none found, expired, or rejected): what can be done without
    an account (an estimate from the built-in prices) still is."""


class DeploymentError(SdtuiError):
    exit_code = EXIT_DEPLOYMENT


class EngineUnreachable(DeploymentError):
    pass


class BuildFailed(DeploymentError):
    pass


class GenerationError(SdtuiError):
    exit_code = EXIT_GENERATION


class WorkerDied(GenerationError):
    pass


class Detached(WorkerDied):
    """This client closed its own connection (quitting); the worker goes on."""


class SpoolFull(GenerationError):
    """The worker's spool cannot keep another image (its disk is full, or it holds the most it
    keeps): it refused the request, or stopped it after the images it could keep."""


class RequestRejected(GenerationError):
    """The worker refused a request as bad input (`bad_request`): e.g. an unknown LoRA, or an
    inpainting model without a mask. Nothing was generated."""

    exit_code = EXIT_BAD_INPUT


class Interrupted(SdtuiError):
    exit_code = EXIT_INTERRUPTED
