"""Python's torch.load opens `fabricd consolidate`'s file, and it holds what the fsdp run's
full checkpoint holds, tensor for tensor.

    python compare_checkpoints.py CONSOLIDATED.pt FULL.pt   (exit 0: equal)
"""
import sys

import torch


def tensors(value, prefix=""):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from tensors(item, f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from tensors(item, f"{prefix}/{index}")


def main(consolidated_path, full_path):
    consolidated = dict(tensors(torch.load(consolidated_path, weights_only=True)))
    full = dict(tensors(torch.load(full_path, weights_only=True)))
    if consolidated.keys() != full.keys():
        print("different tensors:", sorted(consolidated.keys() ^ full.keys()))
        return 1
    for name, tensor in full.items():
        if not torch.equal(consolidated[name], tensor):
            print(f"{name} differs")
            return 1
    if "/model/body.0.weight" not in full or full["/model/body.0.weight"].shape != (32, 16):
        print("the model's first weight is missing or misshapen")
        return 1
    print(f"{len(full)} tensors equal")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
