"""Thread workers that never hold up quitting.

Textual runs `@work(thread=True)` workers in the event loop's default executor, and a
ThreadPoolExecutor's threads are joined when the loop closes and again at interpreter exit: a
worker blocked on the network (a generation streaming from the worker container, an SSH status
probe) would keep the app on a blank terminal until it finished. This executor runs each call
on its own daemon thread and does not wait for them on shutdown. What such a thread was doing
is safe to abandon: the worker container keeps the request and its images until a client
fetches them, and the ledger is written before each resource is made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class DaemonThreads(ThreadPoolExecutor):
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, daemon=True, name="sdtui-worker").start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to join: the threads are daemons and their work may be abandoned."""
