#!/usr/bin/env python3
"""Submit a job to fabricd, follow it to the end and print its output.

    python fabric_client.py --server 127.0.0.1:7070 --tls-ca ca.pem --token-file my.token \
        --nproc-per-node 2 -- /bin/sh -c 'echo hi $RANK'

A plain client of fabric.v1.JobService (proto/fabric/v1/job.proto) as the coordinator,
`fabricd serve`, serves it. The Python stubs are generated from the .proto files each time
the script starts, so nothing generated is kept in the repository.

Exit status: 0 the job SUCCEEDED, 1 it FAILED, 3 it was CANCELLED, 4 an RPC failed.
"""
import argparse
import importlib
import importlib.resources
import pathlib
import sys
import tempfile
import uuid

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"


def generate_stubs(out_dir):
    """Runs protoc on proto/fabric/v1/*.proto into out_dir; returns (job_pb2, job_pb2_grpc)."""
    protos = [str(p.relative_to(PROTO_ROOT)) for p in sorted(PROTO_ROOT.glob("fabric/v1/*.proto"))]
    well_known = importlib.resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    if protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
                    f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]) != 0:
        sys.exit(f"protoc failed on {PROTO_ROOT}")
    # Regular packages, so that an installed package named `fabric` cannot shadow them.
    for package in ("fabric", "fabric/v1"):
        (pathlib.Path(out_dir) / package / "__init__.py").touch()
    sys.path.insert(0, out_dir)
    return importlib.import_module("fabric.v1.job_pb2"), importlib.import_module("fabric.v1.job_pb2_grpc")


def key_value(text):
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def open_channel(server, tls_ca):
    """TLS verified with the cluster CA, or plain text (a server started with --insecure)."""
    if tls_ca is None:
        return grpc.insecure_channel(server)
    return grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=pathlib.Path(tls_ca).read_bytes()))


def run(server, tls_ca, token, spec, job_pb2, job_pb2_grpc):
    def state_name(state):
        return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")

    # The bearer token goes with every call: the coordinator answers UNAUTHENTICATED without it.
    auth = [("authorization", f"Bearer {token}")] if token else []
    with open_channel(server, tls_ca) as channel:
        jobs = job_pb2_grpc.JobServiceStub(channel)
        # A retry with the same request_id would return this job instead of starting another.
        job = jobs.SubmitJob(job_pb2.SubmitJobRequest(spec=spec, request_id=str(uuid.uuid4())), metadata=auth).job
        print(f"submitted job {job.job_id} as {job.owner}", flush=True)

        # The first event is the current snapshot, then one per change; the server ends the
        # stream after a terminal state.
        for event in jobs.WatchJob(job_pb2.WatchJobRequest(job_id=job.job_id), metadata=auth):
            job = event.job
            if job.state != event.previous_state:
                print(f"{state_name(job.state):<10} {job.message}", flush=True)

        # Every retained line of both streams of every rank; the stream ends after them.
        for line in jobs.StreamLogs(job_pb2.StreamLogsRequest(job_id=job.job_id, tail_lines=-1), metadata=auth):
            print(f"[rank {line.rank}] {line.text.decode(errors='replace')}", flush=True)

    return {job_pb2.JOB_STATE_SUCCEEDED: 0, job_pb2.JOB_STATE_FAILED: 1,
            job_pb2.JOB_STATE_CANCELLED: 3}.get(job.state, 4)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="host:port of fabricd's JobService")
    parser.add_argument("--tls-ca", help="the cluster CA's certificate (PEM); plain text without it")
    parser.add_argument("--token-file", help="a file holding your bearer token (from `fabricd tokens add`)")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="ranks per node")
    parser.add_argument("--env", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="added to every rank's environment (repeatable)")
    parser.add_argument("program", help="the executable each rank runs (after --)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fabric_stubs_") as out_dir:
        job_pb2, job_pb2_grpc = generate_stubs(out_dir)
        spec = job_pb2.JobSpec(program=opts.program, args=opts.args,
                               nproc_per_node=opts.nproc_per_node,
                               env=dict(opts.env))
        try:
            token = pathlib.Path(opts.token_file).read_text().strip() if opts.token_file else None
            return run(opts.server, opts.tls_ca, token, spec, job_pb2, job_pb2_grpc)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 4


if __name__ == "__main__":
    sys.exit(main())
