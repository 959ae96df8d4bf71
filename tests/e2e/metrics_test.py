#!/usr/bin/env python3
"""End to end: fabricd's Prometheus metrics, scraped by a real Prometheus server.

    python tests/e2e/metrics_test.py FABRICD DIGITS       # as CTest runs it

`fabricd run --metrics-listen` supervises a 2-rank digits job whose rank 1 fails once (exit 7)
before the job restarts; Prometheus (Debian's package, started here with a 1 s scrape
interval) must then answer queries for the restart and its cause, the failed rank's exit,
the ranks' steps and heartbeat ages, and the rendezvous RPCs. `promtool check metrics`
checks a live scrape, and `fabricd serve --metrics-listen` exports its jobs and agents.
Every wait polls a condition with a deadline.
"""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
FABRICD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else REPO / "build/release/launcher/cli/fabricd")
DIGITS = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else REPO / "build/release/examples/digits")


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


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def start(argv, log, cwd=None):
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)


def metrics_address(log_path):
    """The host:port fabricd announced for its metrics, once it has."""
    match = re.search(r"metrics on http://(\S+)/metrics", pathlib.Path(log_path).read_text())
    return match.group(1) if match else None


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class MetricsTest(unittest.TestCase):
    def setUp(self):
        workdir = tempfile.TemporaryDirectory(prefix="metrics_test_")
        self.addCleanup(workdir.cleanup)
        self.workdir = pathlib.Path(workdir.name)

    def daemon(self, name, argv):
        """Starts argv with its output in workdir/name.log; returns (process, metrics address)."""
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "w")
        self.addCleanup(log.close)
        process = start(argv, log, cwd=self.workdir)
        self.addCleanup(stop, process)
        address = wait_for(lambda: process.poll() is None and metrics_address(log_path), 30,
                           f"{name} to announce its metrics (log: {log_path})")
        return process, address, log_path

    def test_prometheus_sees_the_restart_its_cause_and_the_ranks_progress(self):
        # Rank 1 of generation 0 fails; generation 1 trains for long enough to be scraped.
        rank = (f'if [ "$FABRICD_RESTART_COUNT" = 0 ] && [ "$RANK" = 1 ]; then exit 7; fi; '
                f'exec "{DIGITS}" --accelerator cpu --epochs 100000 --log-dir "{self.workdir}/logs"')
        run, address, log_path = self.daemon("run", [
            FABRICD, "run", "--nproc-per-node", "2", "--max-restarts", "1",
            "--metrics-listen", "127.0.0.1:0", "/bin/sh", "-c", rank])

        # promtool, on what fabricd serves once the ranks heartbeat.
        scrape = wait_for(lambda: (text := get(f"http://{address}/metrics")) and "fabricd_rank_step{" in text and text,
                          120, "the ranks' steps in the scrape")
        check = subprocess.run(["promtool", "check", "metrics"], input=scrape, text=True, capture_output=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr + scrape)

        port = free_port()
        config = self.workdir / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n"
                          f"  - job_name: fabricd\n    static_configs:\n      - targets: ['{address}']\n")
        prometheus_log = open(self.workdir / "prometheus.log", "w")
        self.addCleanup(prometheus_log.close)
        prometheus = start(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{port}"], prometheus_log)
        self.addCleanup(stop, prometheus)

        def query(expression):
            """The samples Prometheus returns for an instant query, as {labels: value}."""
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
            try:
                reply = json.loads(get(url))
            except OSError:
                return {}  # not up yet
            return {json.dumps(sample["metric"], sort_keys=True): float(sample["value"][1])
                    for sample in reply["data"]["result"]}

        def one(expression):
            samples = query(expression)
            return next(iter(samples.values())) if samples else None

        explain = f"\n--- fabricd:\n{pathlib.Path(log_path).read_text()[-3000:]}"
        self.assertEqual(wait_for(lambda: one('fabricd_job_restarts_total{cause="error"}'), 60,
                                  "the restart in Prometheus" + explain), 1)
        self.assertGreaterEqual(wait_for(lambda: one('fabricd_rank_exits_total{cause="error"}'), 30,
                                         "rank 1's failed exit"), 1)
        steps = wait_for(lambda: query("fabricd_rank_step"), 30, "the ranks' steps")
        self.assertEqual(len(steps), 2, steps)
        self.assertTrue(wait_for(lambda: query("fabricd_rank_heartbeat_age_seconds < 10"), 30,
                                 "fresh heartbeat ages of both ranks"))
        # The straggler watch measures the two ranks' step skew (neither lags: no warning).
        self.assertGreater(wait_for(lambda: one("fabricd_job_step_seconds"), 30, "the job's step time"), 0)
        self.assertEqual(len(wait_for(lambda: query("fabricd_rank_step_lag_seconds"), 30, "the ranks' lags")), 2)
        heartbeats = wait_for(
            lambda: one('sum(grpc_server_handled_total{grpc_service="fabric.v1.RendezvousService",'
                        'grpc_method="Heartbeat",grpc_code="OK"})'), 30, "the ranks' Heartbeat calls")
        self.assertGreater(heartbeats, 0)
        self.assertTrue(wait_for(lambda: one('sum(grpc_server_handling_seconds_count'
                                             '{grpc_service="fabric.v1.RendezvousService"})'), 30,
                                 "rendezvous call latencies"))
        stop(run)

    def test_the_coordinator_exports_its_jobs_agents_and_rpcs(self):
        serve, address, log_path = self.daemon("serve", [
            FABRICD, "serve", "--insecure", "--listen", "127.0.0.1:0", "--local-agent", "1",
            "--metrics-listen", "127.0.0.1:0"])
        text = wait_for(lambda: (scrape := get(f"http://{address}/metrics")) and "fabricd_agents 1\n" in scrape
                        and scrape, 30, "the local agent in session")
        for state in ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"):
            self.assertIn(f'fabricd_jobs{{state="{state}"}} 0\n', text)
        self.assertRegex(text, r'grpc_server_handled_total\{grpc_service="fabric\.v1\.AgentService",'
                               r'grpc_method="Register",grpc_type="unary",grpc_code="OK"\} 1\n')
        self.assertEqual(get(f"http://{address}/healthz"), "ok\n")
        stop(serve)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
