"""Waiting on conditions with deadlines, instead of sleeping."""

import concurrent.futures
import time


def wait_until(condition, timeout=15.0, interval=0.05, message="condition"):
    """Polls `condition()` until it returns a truthy value, which is returned.

    Fails the test with `message` (and the last value or exception seen) at the deadline.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = condition()
            if last:
                return last
        except Exception as exc:  # the condition may race the thing it waits for
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}; last: {last!r}")
        time.sleep(interval)


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="within")


def within(timeout, fn, *args, **kwargs):
    """Runs a call that has no timeout of its own (device SDK twin calls never time out).

    A call still running at the deadline fails the test instead of hanging the suite.
    """
    future = _pool.submit(fn, *args, **kwargs)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        name = getattr(fn, "__qualname__", repr(fn))
        raise AssertionError(f"{name} did not finish within {timeout} s") from None
