#!/usr/bin/env python3
"""plot_rewards.py — reward curves of a vader-train run (rewards.h5) as a PNG.

    python3 scripts/plot_rewards.py out/tiny-cpu/rewards.h5 [-o rewards.png] [--smooth 5]

Plots reward_mean with a +-reward_std band, each reward/<module>_mean, the /eval curve when
present, and the loss; needs h5py and matplotlib (pip install h5py matplotlib).
"""
import argparse
import sys

import h5py
import numpy as np


def smooth(v, k):
    if k <= 1 or len(v) < k:
        return v
    return np.convolve(v, np.ones(k) / k, mode="valid")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("h5")
    ap.add_argument("-o", "--out", default=None, help="PNG path (default: next to the .h5)")
    ap.add_argument("--smooth", type=int, default=1, help="moving-average window")
    a = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_rewards.py needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 1
    with h5py.File(a.h5, "r") as f:
        g = f["train"]
        step = g["step"][()]
        fig, (ax, axl) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
        m, s = g["reward_mean"][()], g["reward_std"][()]
        ax.plot(step, m, label="reward (mean)", color="C0", alpha=0.5 if a.smooth > 1 else 1)
        ax.fill_between(step, m - s, m + s, color="C0", alpha=0.15)
        if a.smooth > 1:
            ax.plot(step[a.smooth - 1:], smooth(m, a.smooth), color="C0", label=f"reward (avg {a.smooth})")
        if "reward" in g:
            for i, k in enumerate(sorted(k for k in g["reward"].keys() if k.endswith("_mean"))):
                ax.plot(step, g["reward"][k][()], label=k, color=f"C{i + 2}", linestyle="--")
        if "eval" in f and "step" in f["eval"] and len(f["eval"]["step"]):
            ax.plot(f["eval"]["step"][()], f["eval"]["reward_mean"][()], "o-", color="C1", label="eval")
        ax.set_ylabel("reward")
        ax.legend()
        ax.grid(alpha=0.3)
        axl.plot(step, g["loss"][()], color="C3")
        axl.set_ylabel("loss")
        axl.set_xlabel("optimisation step")
        axl.grid(alpha=0.3)
        fig.suptitle(a.h5)
        out = a.out or a.h5.rsplit(".", 1)[0] + ".png"
        fig.tight_layout()
        fig.savefig(out, dpi=120)
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
