"""PyTorch's side of bench/ddp, run under torchrun (2 processes, Gloo, CPU).

  python -m torch.distributed.run --nproc-per-node 2 bench/ddp_reference.py train small|large STEPS
  python -m torch.distributed.run --nproc-per-node 2 bench/ddp_reference.py allreduce MB ITERATIONS

Rank 0 prints one JSON object: {"steps_per_s": x} or {"seconds_per_op": x}.
"""

import json
import sys
import time

import torch
import torch.distributed as dist
from torch import nn


def mlp(size: str) -> nn.Module:
    if size == "small":
        return nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    # ~25.2M parameters
    return nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1024))


def train(size: str, steps: int) -> None:
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(mlp(size))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    features = 128 if size == "small" else 1024
    classes = 10 if size == "small" else 1024
    x, y = torch.randn(32, features), torch.randint(0, classes, (32,))

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    if dist.get_rank() == 0:
        print(json.dumps({"steps_per_s": steps / (time.perf_counter() - start)}))


def allreduce(megabytes: int, iterations: int) -> None:
    tensor = torch.ones(megabytes * 1024 * 1024 // 4)
    dist.all_reduce(tensor)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(tensor)
    dist.barrier()
    if dist.get_rank() == 0:
        print(json.dumps({"seconds_per_op": (time.perf_counter() - start) / iterations}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    if sys.argv[1] == "train":
        train(sys.argv[2], int(sys.argv[3]))
    else:
        allreduce(int(sys.argv[2]), int(sys.argv[3]))
    dist.destroy_process_group()
