"""The A1111 routes sdtui serves: (method, path, query, body) -> (status, JSON answer).

HTTP itself (auth, bodies, sockets) is sdtui.serve.http's business; the worker is reached only
through the queue, which reaches it only through the core's Session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdtui.errors import GenerationError, RequestRejected
from sdtui.serve import answers
from sdtui.serve.fields import FieldError, translate
from sdtui.serve.queue import Job, JobQueue, Stopping

# A1111's default for show_progress_every_n_steps: a preview every 10 steps.
DEFAULT_PREVIEW_EVERY = 10
MAX_PREVIEW_EVERY = 150  # the protocol's preview_every range


# A1111's sd_vae values that mean the checkpoint's own VAE here: "Automatic" (a VAE file named
# like the checkpoint, else its own; sdtui has no VAE files) and "None" (its own).
VAE_OWN = ("Automatic", "None")


class HttpError(Exception):
    def __init__(self, status: int, detail: Any, error: str = "HTTPException") -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.error = status, detail, error

    def payload(self) -> dict[str, Any]:
        if self.status == 422 and isinstance(self.detail, list):  # FastAPI's validation answer
            return {"detail": self.detail}
        # A1111's api_middleware answer for an exception (handle_exception).
        return {"error": self.error, "detail": self.detail, "body": "", "errors": str(self)}


def field_error(exc: FieldError) -> HttpError:
    """422 naming the field, in FastAPI's shape (what A1111's own validation answers)."""
    return HttpError(422, [{"loc": ["body", exc.setting], "msg": str(exc),
                            "type": "value_error"}])


class Api:
    def __init__(self, queue: JobQueue, model: answers.Model) -> None:
        self.queue = queue
        self.model = model
        self.preview_every = DEFAULT_PREVIEW_EVERY
        self.routes: dict[tuple[str, str], Callable[[dict[str, str], Any], Any]] = {
            ("POST", "/sdapi/v1/txt2img"): lambda q, b: self.generate("txt2img", b),
            ("POST", "/sdapi/v1/img2img"): lambda q, b: self.generate("img2img", b),
            ("GET", "/sdapi/v1/progress"): lambda q, b: self.queue.progress(
                with_image=q.get("skip_current_image", "false").lower() != "true"),
            ("POST", "/sdapi/v1/interrupt"): lambda q, b: self._interrupt(skip=False),
            ("POST", "/sdapi/v1/skip"): lambda q, b: self._interrupt(skip=True),
            ("GET", "/sdapi/v1/sd-models"): lambda q, b: [self.model.item()],
            ("GET", "/sdapi/v1/samplers"): lambda q, b: answers.sampler_items(),
            ("GET", "/sdapi/v1/schedulers"): lambda q, b: answers.scheduler_items(),
            ("GET", "/sdapi/v1/loras"): lambda q, b: answers.lora_items(self.model),
            ("GET", "/sdapi/v1/upscalers"): lambda q, b: answers.upscaler_items(self.model),
            # A1111 lists the VAE files it may swap in; sdtui runs the model's own VAE only.
            ("GET", "/sdapi/v1/sd-vae"): lambda q, b: [],
            # The hires fix's latent modes: sdtui has no hires fix (SillyTavern asks for them
            # beside the upscalers).
            ("GET", "/sdapi/v1/latent-upscale-modes"): lambda q, b: [],
            ("GET", "/sdapi/v1/options"): lambda q, b: self.options(),
            ("POST", "/sdapi/v1/options"): lambda q, b: self.set_options(b),
            ("POST", "/sdapi/v1/png-info"): lambda q, b: self._png_info(b),
        }

    def route(self, method: str, path: str) -> Callable[[dict[str, str], Any], Any]:
        """The route's handler, or HttpError 404/405 (before any body is read)."""
        path = path.rstrip("/") or "/"
        route = self.routes.get((method, path))
        if route is None:
            if any(p == path for _, p in self.routes):
                raise HttpError(405, "Method Not Allowed")
            raise HttpError(404, "Not Found")
        return route

    def _interrupt(self, *, skip: bool) -> dict[str, Any]:
        self.queue.interrupt(skip=skip)
        return {}

    def _png_info(self, body: Any) -> dict[str, Any]:
        try:
            return answers.png_info(body)
        except FieldError as exc:
            raise field_error(exc) from None

    def generate(self, route: str, body: Any) -> dict[str, Any]:
        try:
            request = translate(route, body, preview_every=self.preview_every)
        except FieldError as exc:
            raise field_error(exc) from None
        for key, value in request.overrides.items():
            if key == "sd_model_checkpoint":
                if not isinstance(value, str) or not self.model.is_named(value):
                    raise HttpError(404, f"Model not found: {value!r}; this deployment "
                                    f"serves {self.model.title}")
            elif key == "sd_vae":
                _check_vae(f"override_settings.{key}", value)
            else:
                request.warnings.append(f"override_settings.{key}: not a setting sdtui "
                                        "maps; ignored")
        job = self.queue.submit(Job(request.params, route))
        job.finished.wait()
        if isinstance(job.error, RequestRejected):  # the worker refused it as bad input
            raise HttpError(422, [{"loc": ["body"], "msg": str(job.error),
                                   "type": "value_error"}])
        if isinstance(job.error, Stopping):
            raise HttpError(503, str(job.error), type(job.error).__name__)
        if isinstance(job.error, GenerationError) or job.error is not None:
            raise HttpError(500, str(job.error), type(job.error).__name__)
        return answers.generation(job, request, self.model,
                                  send_images=body.get("send_images", True) is not False)

    def options(self) -> dict[str, Any]:
        """The options that map (A1111's OptionsModel has hundreds; the rest mean nothing
        here)."""
        return {"sd_model_checkpoint": self.model.title,
                "sd_checkpoint_hash": self.model.sha256, "sd_vae": VAE_OWN[0],
                "show_progress_every_n_steps": self.preview_every,
                "live_previews_enable": self.preview_every > 0,
                "samples_format": "png", "samples_save": True}

    def set_options(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise field_error(FieldError("body", "the options must be a JSON object"))
        warnings = []
        for key, value in body.items():
            if key == "sd_model_checkpoint":
                if not isinstance(value, str) or not self.model.is_named(value):
                    raise field_error(FieldError(key, f"model {value!r} not found; this "
                                                 f"deployment serves {self.model.title}"))
            elif key == "sd_vae":
                _check_vae(key, value)
            elif key == "show_progress_every_n_steps":
                if isinstance(value, bool) or not isinstance(value, int) \
                        or value > MAX_PREVIEW_EVERY:
                    raise field_error(FieldError(key, f"{key} must be a whole number up to "
                                                 f"{MAX_PREVIEW_EVERY}, got {value!r}"))
            elif key not in ("live_previews_enable", "samples_format", "samples_save"):
                warnings.append(f"{key}: not an option sdtui maps; ignored")
        if "show_progress_every_n_steps" in body:
            self.preview_every = max(0, body["show_progress_every_n_steps"])
        return {"warnings": warnings}


def _check_vae(field: str, value: Any) -> None:
    if value not in VAE_OWN:
        raise field_error(FieldError(field, f"{field}: no VAE file {value!r}; sdtui runs the "
                                     "model's own VAE (Automatic or None)"))
