"""Count the stray ink in a benchmark lane's sets: isolated bright pixels (> 0.3 in [0, 1]
with the mean of their 8 neighbours below 0.1) per image, the share of faint pixels (0.05 to
0.3), and the mean intensity. Used for the Minimax terms reading.

    python benchmarks/minimax_speckle.py benchmarks/lanes/minimax-terms-mnist5k
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from genprior.synset import load_synset


def stray_ink(images01: torch.Tensor) -> dict:
    padded = F.pad(images01, (1, 1, 1, 1))
    neighbours = (F.avg_pool2d(padded, 3, 1) * 9 - images01) / 8
    return {"isolated_per_image": ((images01 > 0.3) & (neighbours < 0.1)).float().sum((1, 2, 3)).mean().item(),
            "faint_share": ((images01 > 0.05) & (images01 < 0.3)).float().mean().item(),
            "mean_intensity": images01.mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lane", type=Path)
    args = parser.parse_args()
    print("| set | isolated bright px / image | faint px share | mean intensity |\n|---|---|---|---|")
    for folder in sorted((args.lane / "sets").iterdir()):
        synset = load_synset(folder)
        mean = torch.tensor(synset.mean).view(1, -1, 1, 1)
        std = torch.tensor(synset.std).view(1, -1, 1, 1)
        s = stray_ink((synset.images * std + mean).clamp(0, 1))
        print(f"| {folder.name} | {s['isolated_per_image']:.2f} | {s['faint_share']:.4f} | {s['mean_intensity']:.4f} |")


if __name__ == "__main__":
    main()
