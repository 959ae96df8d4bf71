"""Python's side of the checkpoint round trips (checkpoint_test.cc).

read-cpp CKPT OUT: opens a checkpoint that C++ fabric.save wrote, with torch.load's safe
    default (weights_only=True), loads "model" strictly into the same architecture built in
    Python, and saves that model's output on a fixed input to OUT.
write-py DIR: saves, from Python, a bare state dict (DIR/state_dict.pt), a Fabric-style
    checkpoint {"model", "optimizer", "epoch"} (DIR/checkpoint.pt) and the model's output on
    the fixed input (DIR/output.pt), for C++ to load and compare.
"""

import sys

import torch
from torch import nn


def build_model() -> nn.Module:
    # Names: 0.weight, 0.bias, 1.weight, 1.bias, 1.running_mean, 1.running_var,
    # 1.num_batches_tracked, 3.weight, 3.bias — the same as the C++ Sequential's.
    return nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 4))


def fixed_input() -> torch.Tensor:
    return torch.linspace(-1, 1, steps=4 * 16).reshape(4, 16)


def read_cpp(checkpoint_path: str, output_path: str) -> None:
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert checkpoint["epoch"] == 7, checkpoint["epoch"]
    assert checkpoint["name"] == "digits", checkpoint["name"]
    assert set(checkpoint["optimizer"]) == {"state", "param_groups"}
    model = build_model()
    model.load_state_dict(checkpoint["model"], strict=True)
    model.eval()
    with torch.no_grad():
        torch.save(model(fixed_input()), output_path)


def write_py(folder: str) -> None:
    torch.manual_seed(5)
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model.train()
    model(torch.randn(8, 16)).sum().backward()  # moves the BatchNorm running stats too
    optimizer.step()
    torch.save(model.state_dict(), f"{folder}/state_dict.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3},
               f"{folder}/checkpoint.pt")
    model.eval()
    with torch.no_grad():
        torch.save(model(fixed_input()), f"{folder}/output.pt")


if __name__ == "__main__":
    if sys.argv[1] == "read-cpp":
        read_cpp(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "write-py":
        write_py(sys.argv[2])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
