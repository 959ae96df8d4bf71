"""PyTorch's side of the parity test: the same MLP, weights, batches and optimizer that the
C++ test trains through Fabric, trained here by plain PyTorch.

--precision follows Lightning's plugins: "32-true"/"64-true" train in that dtype; "16-true"
and "bf16-true" convert the model and inputs; "16-mixed" and "bf16-mixed" run forward under
torch.autocast and cast the output to float32 ("16-mixed" adds a GradScaler). --device picks
where (cpu or cuda); the batches and initial weights are drawn on the CPU either way.

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


TRUE_DTYPES = {"32-true": torch.float32, "64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}
AUTOCAST_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
ADAM_EPS = {"16-true": 1e-4}  # keep in step with pytorch_parity_test.cc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--precision", choices=list(TRUE_DTYPES) + list(AUTOCAST_DTYPES), required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = TRUE_DTYPES.get(args.precision, torch.float32)
    autocast = AUTOCAST_DTYPES.get(args.precision)
    device = torch.device(args.device)

    torch.manual_seed(1234)
    model = build_model()
    torch.save({name: tensor.clone() for name, tensor in model.state_dict().items()}, args.out / "init.pt")
    x = torch.randn(args.steps, 8, 16)
    y = torch.randint(0, 4, (args.steps, 8))
    torch.save({"x": x, "y": y}, args.out / "batches.pt")

    model = model.to(device=device, dtype=dtype)
    # Adam's default eps (1e-8) is 0 in float16, and 0/0 turns "16-true" into NaN at once on
    # both sides; 1e-4 is representable.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, eps=ADAM_EPS.get(args.precision, 1e-8))
    scaler = torch.amp.GradScaler(device.type) if args.precision == "16-mixed" else None
    losses = []
    for step in range(args.steps):
        optimizer.zero_grad()
        inputs, target = x[step].to(device=device, dtype=dtype), y[step].to(device)
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            output = model(inputs)
        # Lightning casts the output of every non-32-bit forward back to float32.
        output = output.float()
        loss = nn.functional.cross_entropy(output, target)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
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
