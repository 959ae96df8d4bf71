"""PyTorch's side of the parity test: the same MLP, weights, batches and optimizer that the
C++ test trains through Fabric, trained here by plain PyTorch.

Writes into --out:
  init.pt     the initial state dict (a plain dict of tensors, names as in nn.Sequential)
  batches.pt  a dict {"x": [steps, batch, 16] float32, "y": [steps, batch] int64}
  losses.pt   PyTorch's loss at every step, float64
  sampler.pt  torch.utils.data.DistributedSampler's indices for a few (rank, epoch) cases
"""

import argparse
import pathlib

import torch
from torch import nn
from torch.utils.data import DistributedSampler


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--dtype", choices=["float32", "float64"], required=True)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)

    torch.manual_seed(1234)
    model = build_model()
    torch.save({name: tensor.clone() for name, tensor in model.state_dict().items()}, args.out / "init.pt")
    x = torch.randn(args.steps, 8, 16)
    y = torch.randint(0, 4, (args.steps, 8))
    torch.save({"x": x, "y": y}, args.out / "batches.pt")

    model = model.to(dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(args.steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[step].to(dtype)), y[step])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    torch.save(torch.tensor(losses, dtype=torch.float64), args.out / "losses.pt")

    sampler = {}
    for rank in range(3):
        for epoch in range(2):
            s = DistributedSampler(range(10), num_replicas=3, rank=rank, shuffle=True, seed=7)
            s.set_epoch(epoch)
            sampler[f"rank{rank}_epoch{epoch}"] = torch.tensor(list(s), dtype=torch.int64)
    torch.save(sampler, args.out / "sampler.pt")


if __name__ == "__main__":
    main()
