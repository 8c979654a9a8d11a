"""A generation session: requests to a worker, every finished image saved and acknowledged.

Both front ends use this. An image is acknowledged only after it is safely on disk, so an image
the worker finished is never lost: if this process dies first, the next session's `recover`
fetches it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdtui import protocol
from sdtui.client import WorkerClient, decode_png
from sdtui.errors import RequestRejected
from sdtui.outputs import save_image, store_inputs


@dataclass(frozen=True)
class SavedImage:
    path: Path
    request_id: str
    index: int
    seed: int
    params: dict[str, Any]


OnWorkerEvent = Callable[[dict[str, Any]], None]


class Session:
    def __init__(self, client: WorkerClient, out_dir: Path, deployment: str | None = None
                 ) -> None:
        self.client = client
        self.out_dir = out_dir
        # Recorded in each image's index line: the app's gallery shows a deployment's images.
        self.deployment = deployment
        self._current: str | None = None
        self._lock = threading.Lock()

    def _save(self, ev: dict[str, Any]) -> SavedImage:
        # The recorded request: input images as references to their one stored copy.
        params = store_inputs(self.out_dir, ev["params"])
        record = {"deployment": self.deployment} if self.deployment else None
        path = save_image(self.out_dir, decode_png(ev), params, record)
        self.client.ack(ev["id"], ev["index"])
        return SavedImage(path, ev["id"], ev["index"], ev["seed"], params)

    def recover(self) -> list[SavedImage]:
        """Save the images that finished while no client was attached."""
        return [self._save(ev) for ev in self.client.fetch()]

    def generate(self, params: dict[str, Any], on_event: OnWorkerEvent | None = None,
                 ) -> tuple[list[SavedImage], bool]:
        """Run one request. Returns the saved images and whether it was cancelled."""
        request = protocol.request("generate", id=self.client.new_id(), **params)
        del request["type"]
        refusal = protocol.model_refusal(self.client.ready or {}, request)
        if refusal:  # refused here, as the worker would, before anything is sent
            raise RequestRejected(refusal)
        saved: list[SavedImage] = []
        cancelled = False
        with self._lock:
            self._current = request["id"]
        try:
            for ev in self.client.generate(**request):
                if ev["type"] == "image":
                    image = self._save(ev)
                    saved.append(image)
                    ev = {**ev, "path": str(image.path), "params": image.params}
                elif ev["type"] == "done":
                    cancelled = ev["cancelled"]
                if on_event:
                    on_event(ev)
        finally:
            with self._lock:
                self._current = None
        return saved, cancelled

    def cancel(self) -> bool:
        """Cancel the running request; its finished images are still saved."""
        with self._lock:
            rid = self._current
        if rid is None:
            return False
        self.client.cancel(rid)
        return True
