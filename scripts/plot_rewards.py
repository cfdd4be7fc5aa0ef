#!/usr/bin/env python3
"""plot_rewards.py — reward curves of a vader-train run (rewards.h5) as a PNG, no display needed.

    python3 scripts/plot_rewards.py out/tiny-cpu/rewards.h5 [-o rewards.png] [--smooth 5]

Top panel: the training reward_mean with a +-reward_std band (and a moving average with
--smooth), each reward/<module>_mean, and the held-out /eval curve (reward_mean +-
reward_std, per-module means dotted) when the run evaluated. Bottom panel: the loss.
Uses matplotlib's Agg backend (files only); needs h5py, numpy and matplotlib. Exit status
2 with a message when one of them is missing.
"""
import argparse
import sys


def smooth(np, v, k):
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
        import h5py
        import numpy as np
        import matplotlib
        matplotlib.use("Agg")  # no display: render to files only
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"plot_rewards.py needs h5py, numpy and matplotlib ({e}); install them with "
              "`pip install h5py numpy matplotlib` or `apt-get install python3-h5py python3-matplotlib`",
              file=sys.stderr)
        return 2
    with h5py.File(a.h5, "r") as f:
        if "train" not in f or "step" not in f["train"]:
            print(f"{a.h5}: no /train/step: not a vader-train rewards.h5", file=sys.stderr)
            return 1
        g = f["train"]
        step = g["step"][()]
        fig, (ax, axl) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
        m, s = g["reward_mean"][()], g["reward_std"][()]
        ax.plot(step, m, label="train reward (mean)", color="C0", alpha=0.5 if a.smooth > 1 else 1)
        ax.fill_between(step, m - s, m + s, color="C0", alpha=0.15)
        if a.smooth > 1 and len(m) >= a.smooth:
            ax.plot(step[a.smooth - 1:], smooth(np, m, a.smooth), color="C0", label=f"train reward (avg {a.smooth})")
        modules = sorted(k for k in g["reward"].keys() if k.endswith("_mean")) if "reward" in g else []
        if len(modules) > 1:  # with one module its curve is the reward itself
            for i, k in enumerate(modules):
                ax.plot(step, g["reward"][k][()], label=f"train {k[:-5]}", color=f"C{i + 2}", linestyle="--")
        n_eval = 0
        if "eval" in f and "step" in f["eval"] and len(f["eval"]["step"]):
            e = f["eval"]
            es, em = e["step"][()], e["reward_mean"][()]
            n_eval = len(es)
            ax.plot(es, em, "o-", color="C1", label="eval reward (held-out prompts)")
            if "reward_std" in e:
                ax.fill_between(es, em - e["reward_std"][()], em + e["reward_std"][()], color="C1", alpha=0.15)
            if len(modules) > 1 and "reward" in e:
                for i, k in enumerate(modules):
                    if k in e["reward"]:
                        ax.plot(es, e["reward"][k][()], ":", color=f"C{i + 2}", label=f"eval {k[:-5]}")
        ax.set_ylabel("reward")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        axl.plot(step, g["loss"][()], color="C3")
        axl.set_ylabel("loss")
        axl.set_xlabel("optimisation step")
        axl.grid(alpha=0.3)
        fig.suptitle(a.h5)
        out = a.out or a.h5.rsplit(".", 1)[0] + ".png"
        fig.tight_layout()
        fig.savefig(out, dpi=120)
        plt.close(fig)
        print(f"{out}: {len(step)} training steps, {n_eval} evaluations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
