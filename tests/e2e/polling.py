"""What the Python end-to-end tests share: waiting on a condition with a deadline."""
import time


def wait_for(condition, timeout, what):
    """condition()'s first truthy value, polled every 0.2 s; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
