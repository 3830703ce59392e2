"""Retry policy of tasks: only I/O failures (S3, network, teacher HTTP) are worth a retry; a bad
batch or a bug fails at once."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

IO_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, BotoCoreError, ClientError)


def is_io_error(exc: BaseException | None) -> bool:
    return isinstance(exc, IO_ERRORS)


def retry_on_io(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry only when the failure was an I/O error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 — the failed state re-raises its exception
        return is_io_error(exc)
    return False
