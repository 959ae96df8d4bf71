"""What the Python end-to-end tests share: waiting on a condition with a deadline, and
stopping a daemon the way an operator would (SIGTERM, then SIGKILL if it does not go)."""
import signal
import subprocess
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


def stop(process):
    """SIGTERM, up to 30 s to exit, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
