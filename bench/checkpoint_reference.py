"""Python's side of bench/checkpoint: torch.save and torch.load of the same tensors.

Prints one JSON object: {"save_s": [...], "load_s": [...], "bytes": N}. The save is made as
crash-safe as ours (a temporary file, fsync, rename), so the two are comparable: on a VM disk,
writing fresh blocks beside the old file costs several times more than overwriting in place.
"""

import json
import os
import sys
import time

import torch


def main() -> None:
    folder, num_tensors, elements, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    state = {f"tensor_{i}": torch.full((elements,), float(i)) for i in range(num_tensors)}
    path = os.path.join(folder, "python.pt")
    save_s, load_s = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        with open(path + ".tmp", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
        save_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        loaded = torch.load(path, weights_only=True)
        load_s.append(time.perf_counter() - start)
        assert loaded["tensor_1"][0].item() == 1.0
    print(json.dumps({"save_s": save_s, "load_s": load_s, "bytes": os.path.getsize(path)}))


if __name__ == "__main__":
    main()
