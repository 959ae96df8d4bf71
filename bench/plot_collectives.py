#!/usr/bin/env python3
"""Draws all_reduce bus bandwidth against message size, shared memory against Gloo (and the
memcpy roof beside them), from the JSON lines `bench/run collectives` prints.

    bench/run collectives --rounds 5 > docs/bench/collectives.json
    python3 bench/plot_collectives.py docs/bench/collectives.json docs/bench/collectives.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display: a PNG only
import matplotlib.pyplot as plt  # noqa: E402


def read_lines(path):
    with open(path) as lines:
        return [json.loads(line) for line in lines if line.startswith("{")]


def series(results):
    """(bytes, value) per side, sorted by size: ours and Gloo from the main lines, the copy
    roof from the "-vs-copy" lines (whose baseline is memcpy)."""
    shared, gloo, copy = [], [], []
    for result in results:
        if result.get("bench") != "collectives":
            continue
        if result["case"].endswith("-vs-copy"):
            copy.append((result["bytes"], result["theirs"]))
        else:
            shared.append((result["bytes"], result["ours"], result["ratio"]))
            gloo.append((result["bytes"], result["theirs"]))
    return sorted(shared), sorted(gloo), sorted(copy)


def size_label(size):
    return f"{size // 2**20} MB" if size >= 2**20 else f"{size // 2**10} KB"


def main(source, target):
    shared, gloo, copy = series(read_lines(source))
    if not shared:
        sys.exit(f"{source} holds no collectives lines: run `bench/run collectives > {source}` first")
    figure, axes = plt.subplots(figsize=(8, 5))
    axes.plot([s for s, *_ in shared], [v for _, v, *_ in shared], "o-", label="Fabric shared memory (shm)")
    axes.plot([s for s, _ in gloo], [v for _, v in gloo], "s-", label="Gloo, TCP loopback (torch's best here)")
    axes.plot([s for s, _ in copy], [v for _, v in copy], ":", color="grey", label="memcpy, both ranks (roof)")
    for size, value, ratio in shared:  # the median of the rounds' ratios, as in the JSON
        axes.annotate(f"{ratio:.1f}x", (size, value), textcoords="offset points", xytext=(0, 8),
                      ha="center", fontsize=8)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks([s for s, *_ in shared], [size_label(s) for s, *_ in shared])
    axes.set_xlabel("all_reduce message size (float32)")
    axes.set_ylabel("bus bandwidth, GB/s")
    rounds = read_lines(source)[0].get("rounds", "?")
    axes.set_title(f"all_reduce on 2 ranks of one node (median of {rounds} alternating rounds)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=120)
    print(f"wrote {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: bench/plot_collectives.py RESULTS.json OUT.png")
    main(sys.argv[1], sys.argv[2])
