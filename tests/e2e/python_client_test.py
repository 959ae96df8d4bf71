#!/usr/bin/env python3
"""End to end: examples/python_client/fabric_client.py against a real `fabricd serve`.

    python tests/e2e/python_client_test.py FABRICD DIGITS       # as CTest runs it
    FABRICD=... DIGITS=... pytest tests/e2e/python_client_test.py

One `fabricd serve --listen 127.0.0.1:0 --local-agent 2` serves every case; each case runs
the client as a user would, as a subprocess, and checks its exit status and what it printed.
Every wait has a deadline and waits for a condition (a line of output, a process's exit).
"""
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

REPO = pathlib.Path(__file__).resolve().parents[2]
CLIENT = REPO / "examples" / "python_client" / "fabric_client.py"
FABRICD = os.environ.get("FABRICD", str(REPO / "build" / "release" / "launcher" / "cli" / "fabricd"))
DIGITS = os.environ.get("DIGITS", str(REPO / "build" / "release" / "examples" / "digits"))

STATES = ("PENDING", "RUNNING", "RESTARTING", "SUCCEEDED", "FAILED", "CANCELLED")
# A rank that waits until the file $GATE exists, so that a case decides when the job ends.
GATED = 'while [ ! -e "$GATE" ]; do sleep 0.05; done; '


class Lines:
    """The lines of a text pipe, read on a thread, so that a test can wait for one."""

    def __init__(self, pipe):
        self.lines = []
        self._closed = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe):
        with pipe:
            for line in pipe:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, pattern, timeout):
        """The match of the first line that matches pattern; None once the pipe is closed or
        timeout seconds have passed without one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def wait_closed(self, timeout):
        with self._changed:
            return self._changed.wait_for(lambda: self._closed, timeout)

    def __str__(self):
        with self._changed:
            return "\n".join(self.lines)


class Process:
    """A subprocess with stdout and stderr merged into one Lines."""

    def __init__(self, argv, cwd=None):
        self.argv = argv
        self.popen = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace")
        self.output = Lines(self.popen.stdout)

    def wait(self, timeout):
        """The exit status, once the output is read to its end; kills the process and fails
        (AssertionError) if it runs past timeout seconds."""
        try:
            returncode = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.argv} still ran after {timeout}s; its output:\n{self.output}")
        self.output.wait_closed(10)
        return returncode

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited 15 seconds later."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(15)

    def states(self):
        """The job states the client printed, in order."""
        return [line.split()[0] for line in self.output.lines if line.split() and line.split()[0] in STATES]

    def log_lines(self):
        return [line for line in self.output.lines if line.startswith("[rank ")]


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Absolute, since the server runs in another directory.
        cls.fabricd, cls.digits = os.path.abspath(FABRICD), os.path.abspath(DIGITS)
        for path in (cls.fabricd, cls.digits):
            if not os.access(path, os.X_OK):
                raise AssertionError(f"{path} is not an executable; build it, or pass FABRICD and DIGITS")
        # The ranks run in the agent's working directory (digits writes logs/ there).
        workdir = tempfile.TemporaryDirectory(prefix="python_client_test_")
        cls.addClassCleanup(workdir.cleanup)
        cls.workdir = pathlib.Path(workdir.name)
        # Served as a cluster is: TLS with a node certificate of a fresh CA, and a token.
        pki = cls.workdir / "pki"
        subprocess.run([cls.fabricd, "certs", "init", str(pki)], check=True, capture_output=True)
        subprocess.run([cls.fabricd, "certs", "issue", str(pki), "coordinator"], check=True, capture_output=True)
        cls.tokens, cls.token_file = cls.workdir / "tokens", cls.workdir / "python.token"
        with open(cls.token_file, "w") as out:
            subprocess.run([cls.fabricd, "tokens", "add", str(cls.tokens), "python-user"], check=True, stdout=out)
        cls.ca = pki / "ca.pem"
        cls.server = Process([cls.fabricd, "serve", "--listen", "127.0.0.1:0", "--local-agent", "2",
                              "--tls-cert", str(pki / "coordinator.pem"), "--tls-key", str(pki / "coordinator.key"),
                              "--tls-ca", str(cls.ca), "--token-file", str(cls.tokens)], cwd=cls.workdir)
        cls.addClassCleanup(cls.server.stop)
        listening = cls.server.output.wait_for(r"listening on (\S+)", 60)
        if not listening:
            raise AssertionError(f"fabricd serve never said where it listens:\n{cls.server.output}")
        cls.address = listening.group(1)

    def client(self, command, nproc_per_node=2, env=(), token_file=None):
        argv = [sys.executable, str(CLIENT), "--server", self.address, "--tls-ca", str(self.ca),
                "--nproc-per-node", str(nproc_per_node)]
        if token_file != "":
            argv += ["--token-file", str(token_file or self.token_file)]
        for assignment in env:
            argv += ["--env", assignment]
        client = Process(argv + ["--", *command])
        self.addCleanup(client.stop)
        return client

    def explain(self, client):
        return f"\n--- client output:\n{client.output}\n--- fabricd serve output:\n{self.server.output}"

    def assert_states(self, client, final, must_see_running):
        """The client printed each state once, in the order of the job's life: PENDING (unless
        the job was placed before the watch began), RUNNING, then `final`."""
        expected = [["PENDING", "RUNNING", final], ["RUNNING", final]]
        if not must_see_running:
            expected += [["PENDING", final], [final]]
        self.assertIn(client.states(), expected, self.explain(client))

    def test_health_and_reflection_answer_standard_clients_without_a_token(self):
        # grpcio's own health and reflection clients, as grpc_health_probe and grpcurl use them.
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
        with open(self.ca, "rb") as ca:
            channel = grpc.secure_channel(self.address, grpc.ssl_channel_credentials(ca.read()))
        with channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "fabric.v1.JobService", "fabric.v1.AgentService"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                self.assertEqual(status, health_pb2.HealthCheckResponse.SERVING, f"service '{service}'")
            with self.assertRaises(grpc.RpcError) as unknown:
                health.Check(health_pb2.HealthCheckRequest(service="fabric.v1.NoSuchService"), timeout=10)
            self.assertEqual(unknown.exception.code(), grpc.StatusCode.NOT_FOUND)

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            response = next(reflection.ServerReflectionInfo(iter([request]), timeout=10))
            services = {service.name for service in response.list_services_response.service}
            self.assertLessEqual({"fabric.v1.JobService", "fabric.v1.AgentService", "grpc.health.v1.Health"},
                                 services)
            # The messages too: SubmitJob's request type is described from the server alone.
            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="fabric.v1.JobService")
            response = next(reflection.ServerReflectionInfo(iter([request]), timeout=10))
            self.assertTrue(response.file_descriptor_response.file_descriptor_proto, response)

    def test_shell_job_reports_every_state_and_both_streams_of_both_ranks(self):
        # A job that holds both slots keeps the next one PENDING until it ends, and a gated
        # job cannot end before the watch has shown it RUNNING: every state is seen.
        blocker_gate, gate = self.workdir / "gate_blocker", self.workdir / "gate_shell"
        blocker = self.client(["/bin/sh", "-c", GATED], env=[f"GATE={blocker_gate}"])
        try:
            self.assertTrue(blocker.output.wait_for(r"^RUNNING\b", 60), self.explain(blocker))
            client = self.client(["/bin/sh", "-c", GATED + "echo out $RANK; echo err $RANK >&2"], env=[f"GATE={gate}"])
            self.assertTrue(client.output.wait_for(r"^PENDING\b", 60), self.explain(client))
            blocker_gate.touch()
            self.assertTrue(client.output.wait_for(r"^RUNNING\b", 60), self.explain(client))
        finally:
            blocker_gate.touch()
            gate.touch()
        self.assertEqual(blocker.wait(60), 0, self.explain(blocker))
        self.assertEqual(client.wait(60), 0, self.explain(client))
        self.assertEqual(client.states(), ["PENDING", "RUNNING", "SUCCEEDED"], self.explain(client))
        self.assertCountEqual(client.log_lines(),
                              ["[rank 0] out 0", "[rank 0] err 0", "[rank 1] out 1", "[rank 1] err 1"],
                              self.explain(client))

    def test_digits_example_trains_to_90_percent(self):
        client = self.client([self.digits, "--accelerator", "cpu", "--require-accuracy", "0.9"])
        self.assertEqual(client.wait(600), 0, self.explain(client))
        self.assert_states(client, "SUCCEEDED", must_see_running=False)
        self.assertTrue(any(line.startswith("[rank 0] final test accuracy") for line in client.log_lines()),
                        self.explain(client))

    def test_failing_program_exits_1_and_shows_failed(self):
        client = self.client(["/bin/sh", "-c", "exit 3"])
        self.assertEqual(client.wait(60), 1, self.explain(client))
        self.assert_states(client, "FAILED", must_see_running=False)

    def test_cancelled_job_exits_3_and_shows_cancelled(self):
        gate = self.workdir / "gate_cancel"
        client = self.client(["/bin/sh", "-c", GATED], env=[f"GATE={gate}"])
        try:
            submitted = client.output.wait_for(r"^submitted job (\S+)", 60)
            self.assertTrue(submitted and client.output.wait_for(r"^RUNNING\b", 60), self.explain(client))
            cancel = subprocess.run([self.fabricd, "cancel", "--server", self.address, "--tls-ca", str(self.ca),
                                     "--token-file", str(self.token_file), submitted.group(1)],
                                    capture_output=True, text=True, timeout=60)
            self.assertEqual(cancel.returncode, 0, cancel.stdout + cancel.stderr)
            self.assertEqual(client.wait(60), 3, self.explain(client))
        finally:
            gate.touch()
        self.assert_states(client, "CANCELLED", must_see_running=True)

    def test_empty_program_is_invalid_argument_and_exits_4(self):
        client = self.client([""])
        self.assertEqual(client.wait(60), 4, self.explain(client))
        self.assertTrue(client.output.wait_for(r"INVALID_ARGUMENT", 0), self.explain(client))
        self.assertFalse(client.output.wait_for(r"^submitted job", 0), self.explain(client))

    def test_without_a_token_is_unauthenticated_and_exits_4(self):
        client = self.client(["/bin/true"], token_file="")
        self.assertEqual(client.wait(60), 4, self.explain(client))
        self.assertTrue(client.output.wait_for(r"error: UNAUTHENTICATED", 0), self.explain(client))
        self.assertFalse(client.output.wait_for(r"^submitted job", 0), self.explain(client))

    def test_the_job_belongs_to_the_tokens_user(self):
        client = self.client(["/bin/true"])
        self.assertEqual(client.wait(60), 0, self.explain(client))
        self.assertTrue(client.output.wait_for(r"^submitted job \S+ as python-user$", 0), self.explain(client))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        FABRICD = sys.argv[1]
    if len(sys.argv) > 2:
        DIGITS = sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)
