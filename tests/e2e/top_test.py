#!/usr/bin/env python3
"""End to end: `fabricd top` in a real terminal (tmux), following a job live.

    python tests/e2e/top_test.py FABRICD [ARTIFACT_DIR]      # as CTest runs it

A one-node `fabricd serve` runs a job whose ranks wait for a gate file. `fabricd top` runs in
a detached tmux session (a real pseudo-terminal, 200x30); the test reads the screen with
`tmux capture-pane` until the job's row says RUNNING with its 2 ranks, opens the gate, and
waits for the same row to say SUCCEEDED without restarting top: the screen is refreshed
live. The screens are saved as ARTIFACT_DIR/fabricd_top_running.txt and fabricd_top.txt. Every wait polls with a
deadline.
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

FABRICD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "fabricd"
ARTIFACTS = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else None


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


class TopTest(unittest.TestCase):
    def setUp(self):
        if not shutil.which("tmux"):
            raise AssertionError("tmux is not installed; run scripts/bootstrap")
        workdir = tempfile.TemporaryDirectory(prefix="top_test_")
        self.addCleanup(workdir.cleanup)
        self.workdir = pathlib.Path(workdir.name)
        log = open(self.workdir / "serve.log", "w")
        self.addCleanup(log.close)
        self.serve = subprocess.Popen([FABRICD, "serve", "--insecure", "--listen", "127.0.0.1:0", "--local-agent", "2"],
                                      stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        self.addCleanup(self.stop_serve)
        self.address = wait_for(lambda: (m := re.search(r"listening on (\S+)", (self.workdir / "serve.log").read_text()))
                                and m.group(1), 30, "fabricd serve to listen")

    def stop_serve(self):
        self.serve.send_signal(signal.SIGTERM)
        try:
            self.serve.wait(30)
        except subprocess.TimeoutExpired:
            self.serve.kill()

    def fabricd(self, command, *args):
        return subprocess.run([FABRICD, command, "--insecure", "--server", self.address, *args], capture_output=True,
                              text=True, check=True).stdout

    def test_top_follows_a_job_from_running_to_succeeded_in_a_terminal(self):
        gate = self.workdir / "gate"
        job = self.fabricd("submit", "--nproc-per-node", "2", "--name", "gated", "--",
                           "/bin/sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.05; done').strip()
        session = f"fabricd-top-{os.getpid()}"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "30",
                        f"{FABRICD} top --insecure --server {self.address} --interval 0.2"], check=True)
        self.addCleanup(subprocess.run, ["tmux", "kill-session", "-t", session], capture_output=True)

        def screen():
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

        def row(state):
            match = re.search(rf"^{re.escape(job)}\s+(\S+)\s+{state}\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", screen(), re.M)
            return match

        running = wait_for(lambda: row("RUNNING"), 30, f"{job} RUNNING on top's screen")
        self.assertEqual(running.group(1), "anonymous", "the owner column (an --insecure server's caller)")
        self.assertEqual(running.group(2), "0", "restarts")
        self.assertEqual(running.group(3), "2", "ranks")
        while_running = screen()
        self.assertIn("1 RUNNING", while_running, "the header counts jobs by state")
        gate.touch()
        wait_for(lambda: row("SUCCEEDED"), 30, f"{job} SUCCEEDED on the same, refreshed screen")
        last = screen()
        self.assertRegex(last, r"^fabricd top\s+127\.0\.0\.1:\d+\s+1 job: 1 SUCCEEDED", "header")
        if ARTIFACTS:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "fabricd_top_running.txt").write_text(while_running)
            (ARTIFACTS / "fabricd_top.txt").write_text(last)

    def test_once_prints_one_screen_and_exits(self):
        out = self.fabricd("top", "--once")
        self.assertRegex(out, r"^fabricd top\s+127\.0\.0\.1:\d+\s+0 jobs")
        self.assertIn("JOB ID", out)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
