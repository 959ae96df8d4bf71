#!/usr/bin/env python3
"""End to end: fabricd's status page in headless Chromium, on one node and on two.

    python tests/e2e/status_page_test.py FABRICD DDP_WORKER [ARTIFACT_DIR]     # as CTest runs it

One node: `fabricd run --metrics-listen` runs 2 DDP ranks whose rank 1 exits 7 in generation
0 and, after the restart, sleeps 150 ms before every step (tests/integration/ddp/ddp_worker.cc,
scenario "straggler"). Chromium (Debian's, through selenium; tests/e2e/browser.py) must then
show the job RUNNING with 1 of 1 restarts, the restart's cause, both ranks, the straggler
warning naming rank 1 (and its row marked), and loss and steps/s plots that grow. A second
browser without the token of a server started with --token-file gets the login form, and
with the token the page.

Two nodes: a coordinator and two agents, each in a network namespace of its own
(tests/e2e/network_lab.py), run one rank per node, rank 1 the straggler; the coordinator's
page (read by a browser inside the coordinator's namespace) shows both nodes, a rank on each,
and the straggler that only the coordinator can see, since each node holds a single rank.
`fabricd top` prints the same job. Screenshots and top's screen go to ARTIFACT_DIR. Every
wait polls a condition with a deadline.
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

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import browser  # noqa: E402
from network_lab import NetworkLab  # noqa: E402

FABRICD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "fabricd"
DDP_WORKER = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "ddp_worker"
ARTIFACTS = pathlib.Path(sys.argv[3]) if len(sys.argv) > 3 else None
TOKEN = "page-token-0123456789abcdef"

# Rank 1 fails once, then every step of it is 150 ms late: a straggler of 2 ranks.
FAIL_ONCE_THEN_STRAGGLE = (f'if [ "$FABRICD_RESTART_COUNT" = 0 ] && [ "$RANK" = 1 ]; then exit 7; fi; '
                           f'exec "{DDP_WORKER}" straggler 1 100000 150')


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def status_page_address(log_path):
    match = re.search(r"status page on http://(\S+)/", pathlib.Path(log_path).read_text())
    return match.group(1) if match else None


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StatusPageTest(unittest.TestCase):
    def setUp(self):
        try:
            self.driver = browser.chromium_driver()
        except (ImportError, RuntimeError) as error:
            self.skipTest(str(error))
        self.addCleanup(self.driver.quit)
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="fabric-status-page-"))

    def start(self, name, argv):
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "w")
        self.addCleanup(log.close)
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=self.workdir)
        self.addCleanup(stop, process)
        return process, log_path

    def screenshot(self, name):
        if ARTIFACTS:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(ARTIFACTS / name))

    def test_one_node_shows_the_restart_its_cause_the_straggler_and_live_plots(self):
        tokens = self.workdir / "tokens"
        tokens.write_text(f"{TOKEN} alice\n")
        run, log_path = self.start("run", [
            FABRICD, "run", "--nproc-per-node", "2", "--max-restarts", "1", "--metrics-listen", "127.0.0.1:0",
            "--token-file", str(tokens), "/bin/sh", "-c", FAIL_ONCE_THEN_STRAGGLE])
        address = wait_for(lambda: run.poll() is None and status_page_address(log_path), 30,
                           f"fabricd run to announce its status page (log: {log_path})")
        url = f"http://{address}/"

        # Without the token: the login form, and no job is shown.
        state = browser.watch(self.driver, url, lambda s: s["login"], 30, "the login form")
        self.assertEqual(state["jobs"], [], "nothing is shown before the token")
        self.driver.find_element("css selector", "input#token").send_keys(TOKEN)
        self.driver.find_element("css selector", "form#login").submit()

        def straggling_with_plots(s):
            detail = s["details"][0] if s["details"] else None
            return (s["jobs"] and s["jobs"][0]["state"] == "RUNNING" and detail and detail["straggler"]
                    and len(detail["ranks"]) == 2 and detail["plots"].get("loss", 0) >= 3
                    and detail["plots"].get("steps_per_second", 0) >= 3)

        state = browser.watch(self.driver, url, straggling_with_plots, 120,
                              "the running job with its straggler and 3 points in each plot")
        job, detail = state["jobs"][0], state["details"][0]
        self.assertFalse(state["login"], "the token was taken")
        self.assertEqual(job["restarts"].replace(" ", ""), "1/1")
        self.assertRegex(detail["straggler"], r"^rank 1 lags the median rank by 0\.\d+ s per step")
        self.assertEqual([r["straggler"] for r in detail["ranks"]], [False, True], "rank 1's row is marked")
        self.assertEqual(len(detail["restarts"]), 1)
        self.assertIn("generation 0", detail["restarts"][0])
        self.assertIn("rank 1 failed first, with exit code 7", detail["restarts"][0])
        self.assertNotEqual(job["loss"], "—", "the loss the ranks log with fabric.log")
        self.assertGreater(float(job["steps-per-second"]), 0)
        self.assertEqual(len(state["nodes"]), 1)

        # The plots grow while the job runs: the page redraws without a reload.
        points = detail["plots"]["loss"]
        browser_state = wait_for(lambda: (s := browser.page_state(self.driver))["details"]
                                 and s["details"][0]["plots"].get("loss", 0) > points and s, 30,
                                 "a new point in the loss plot")
        self.assertGreater(browser_state["details"][0]["plots"]["loss"], points)
        self.screenshot("status_page_fabricd_run.png")

    def test_two_nodes_in_namespaces_show_both_nodes_and_a_straggler_across_them(self):
        why = NetworkLab.unavailable()
        if why:
            self.skipTest(why)
        lab = NetworkLab(["c", "a", "b"])
        self.addCleanup(lab.close)
        coordinator = f"{lab.addresses['c']}:7700"
        page = f"{lab.addresses['c']}:7701"
        # Off loopback fabricd speaks TLS only: a cluster CA, a certificate per node, a token.
        pki = self.workdir / "pki"
        subprocess.run([FABRICD, "certs", "init", str(pki)], check=True, capture_output=True)
        for name, node in (("node-c", "c"), ("node-a", "a"), ("node-b", "b")):
            subprocess.run([FABRICD, "certs", "issue", str(pki), name, "--host", lab.addresses[node]], check=True,
                           capture_output=True)
        tokens, alice = self.workdir / "tokens", self.workdir / "alice.token"
        with open(alice, "w") as out:
            subprocess.run([FABRICD, "tokens", "add", str(tokens), "alice"], check=True, stdout=out)

        def tls(name):
            return ["--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / f"{name}.key"),
                    "--tls-ca", str(pki / "ca.pem")]

        self.start("serve", lab.exec("c") + [FABRICD, "serve", "--listen", coordinator, "--local-agent", "0",
                                             "--state", str(self.workdir / "state"), "--metrics-listen", page,
                                             "--token-file", str(tokens)] + tls("node-c"))
        for node in ("a", "b"):
            self.start(f"agent-{node}", lab.exec(node) + [
                FABRICD, "agent", "--coordinator", coordinator, "--node-name", f"node-{node}",
                "--advertise", lab.addresses[node], "--slots", "1"] + tls(f"node-{node}"))
        client = lab.exec("c") + [FABRICD]
        as_alice = ["--server", coordinator, "--tls-ca", str(pki / "ca.pem"), "--token-file", str(alice)]
        wait_for(lambda: subprocess.run(client + ["list"] + as_alice, capture_output=True).returncode == 0, 30,
                 "the coordinator to answer")
        submit = subprocess.run(client + ["submit"] + as_alice + ["--num-nodes", "2", "--nproc-per-node", "1", "--",
                                                                  DDP_WORKER, "straggler", "1", "100000", "150"],
                                capture_output=True, text=True)
        self.assertEqual(submit.returncode, 0, submit.stderr)
        job = submit.stdout.strip()

        shot = self.workdir / "two_nodes.png"
        until = ("len(s['nodes']) == 2 and s['details'] and s['details'][0]['straggler'] and "
                 "len(s['details'][0]['ranks']) == 2 and s['details'][0]['plots'].get('loss', 0) >= 3")
        token = alice.read_text().strip()
        seen = subprocess.run(lab.exec("c") + [sys.executable, str(HERE / "browser.py"), f"http://{page}/",
                                               str(shot), until, "150"], capture_output=True, text=True,
                              env=dict(os.environ, FABRIC_PAGE_TOKEN=token))
        self.assertEqual(seen.returncode, 0, seen.stderr + seen.stdout)
        state = json.loads(seen.stdout)
        self.assertEqual(sorted(n["name"] for n in state["nodes"]), ["node-a", "node-b"])
        self.assertEqual(state["jobs"][0]["id"], job)
        detail = state["details"][0]
        self.assertEqual({r["rank"]: r["node"] for r in detail["ranks"]}, {"0": "node-a", "1": "node-b"},
                         "one rank on each node: no agent alone could compare them")
        self.assertRegex(detail["straggler"], r"^rank 1 lags the median rank")

        top = subprocess.run(client + ["top", "--once"] + as_alice,
                             capture_output=True, text=True)
        self.assertEqual(top.returncode, 0, top.stderr)
        self.assertRegex(top.stdout, rf"{re.escape(job)}\s+alice\s+RUNNING")
        self.assertIn(f"straggler in {job}: rank 1 lags", top.stdout)
        if ARTIFACTS:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "status_page_two_nodes.png").write_bytes(shot.read_bytes())
            (ARTIFACTS / "fabricd_top_two_nodes.txt").write_text(top.stdout)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
