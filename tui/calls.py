"""Running service calls off the UI thread and bringing their results back.

The service's registry and header work is plain blocking code (SQLite, stat, header reads, hashing
for ``verify --deep``), so every call runs in a named Textual thread worker; its result comes back
as the worker's state change on the node that started it, which hands it to ``then`` on the UI
thread.
A failure becomes the same :class:`ModelMgrError` text the CLI prints, shown in a modal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from textual.worker import Worker, WorkerState

from modelmgr.errors import ModelMgrError

T = TypeVar("T")


def user_error(exc: BaseException) -> ModelMgrError:
    """An expected error as it is; anything else as the CLI words an internal error."""
    if isinstance(exc, ModelMgrError):
        return exc
    return ModelMgrError(f"internal error: {exc!r}",
                         "run again with --debug and report the traceback")


class ServiceCalls:
    """Mixin for the App and the screens: ``call_service`` and the handler that completes it.

    The node that calls owns the worker: a screen's calls die with the screen (Textual cancels a
    node's workers when it goes away), the App's calls (pulls, verify, remove...) outlive every
    screen. ``group`` makes a call exclusive within its group: a newer call (the details of the
    row just highlighted) cancels the older one, whose result is then dropped.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._service_calls: dict[Worker, Callable[[Any], None] | None] = {}
        """Workers started by ``call_service`` that have not finished, with their ``then``."""

    def call_service(self, name: str, fn: Callable[[], T],
                     then: Callable[[T], None] | None = None, *,
                     group: str | None = None) -> Worker[T]:
        worker = self.run_worker(fn, name=name, group=group or name,  # type: ignore[attr-defined]
                                 thread=True, exit_on_error=False, exclusive=group is not None)
        self._service_calls[worker] = then
        return worker

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker not in self._service_calls:
            return
        if event.state == WorkerState.SUCCESS:
            then = self._service_calls.pop(event.worker)
            if then is not None:
                then(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self._service_calls.pop(event.worker)
            self.app.show_error(user_error(event.worker.error))  # type: ignore[attr-defined]
        elif event.state == WorkerState.CANCELLED:
            self._service_calls.pop(event.worker)
