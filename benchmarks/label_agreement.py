"""How often a classifier trained on real data agrees with a synthetic set's labels.

    python benchmarks/label_agreement.py                    # every set of the distillation table
    python benchmarks/label_agreement.py runs/x/synset ...  # chosen sets (name = the directory)

A class-conditional generator does not always draw the class it is asked for, and a
handful of latent iterations may not repair it. This benchmark trains one "judge"
ConvNet-3 on the real ``mnist5k`` train split (no augmentation, fixed seed), reports
its test accuracy, then for each synthetic set: the share of images the judge assigns
to their own label, the judge's mean probability of that label, and the images it
assigns elsewhere (index: label -> judged). A set whose images disagree with their
labels teaches the wrong class on every network, whatever the matching loss did.
Writes ``benchmarks/results/label_agreement_mnist5k.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from genprior.baselines import train_embedding_net
from genprior.data import load_dataset
from genprior.synset import load_synset, save_tensors_atomic, write_text_atomic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "label_agreement_mnist5k.md"
DATASET = "mnist5k"
JUDGE_EPOCHS = 10
JUDGE_SEED = 0


@torch.no_grad()
def predict(net: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([net(images[i:i + batch]).softmax(1) for i in range(0, len(images), batch)])


def _set_name(path: Path) -> str:
    return path.parent.name if path.name == "synset" else path.name


def table_sets() -> list[Path]:
    """The distillation table's built sets (``genprior bench benchmarks/configs/distill_table_mnist5k.json``,
    default folder), in its row order."""
    import json

    from genprior.bench import cell_file, cells, load_config

    config = load_config(str(HERE / "configs" / "distill_table_mnist5k.json"))
    out = ROOT / "runs" / "bench" / config["name"]
    found = [cell_file(out, k) for k in cells(config) if k.startswith("build|")]
    sets = [Path(json.loads(f.read_text())["synset"]) for f in found if f.exists()]
    sets = [p if p.is_absolute() else ROOT / p for p in sets]  # bench records them from the project root
    return [p for p in sets if (p / "meta.json").exists()]


def judge_net(train) -> tuple[torch.nn.Module, str]:
    """The judge, trained once and kept under runs/ (it is deterministic on CPU)."""
    from safetensors.torch import load_file

    from genprior.nets import create_net

    cache = ROOT / "runs" / "judge" / f"{DATASET}-convnet-e{JUDGE_EPOCHS}-s{JUDGE_SEED}.safetensors"
    if cache.exists():
        net = create_net("convnet", train.channels, train.num_classes, train.resolution)
        net.load_state_dict(load_file(str(cache)))
        return net.eval(), f"loaded from {cache.relative_to(ROOT)}"
    t0 = time.time()
    net = train_embedding_net(train, seed=JUDGE_SEED, epochs=JUDGE_EPOCHS)
    took = time.time() - t0
    save_tensors_atomic({k: v.contiguous() for k, v in net.state_dict().items()}, cache)
    return net, f"trained in {took:.0f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", type=Path, help="synthetic-set directories (default: the table's)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sets = args.sets or table_sets()
    if not sets:
        raise SystemExit("no synthetic sets found; run `genprior bench benchmarks/configs/distill_table_mnist5k.json` first or name set directories")

    train, test = load_dataset(DATASET, "train"), load_dataset(DATASET, "test")
    judge, how = judge_net(train)
    test_acc = (predict(judge, test.images).argmax(1) == test.labels).float().mean().item()

    rows = []
    for path in sets:
        synset = load_synset(path)
        if synset.dataset != DATASET:
            raise SystemExit(f"{path} was made for {synset.dataset}, not {DATASET}; name {DATASET} sets only")
        probs = predict(judge, synset.images)
        judged = probs.argmax(1)
        agree = (judged == synset.labels).float().mean().item()
        own = probs.gather(1, synset.labels[:, None]).mean().item()
        wrong = [f"{i}: {int(synset.labels[i])}->{int(judged[i])}" for i in torch.nonzero(judged != synset.labels).flatten().tolist()]
        rows.append(f"| {_set_name(path)} | {len(synset.labels)} | {100 * agree:.1f} | {own:.3f} | {', '.join(wrong) or '–'} |")
        print(rows[-1], flush=True)

    text = "\n".join([
        "# Label agreement of synthetic sets on mnist5k",
        "",
        f"Judge: ConvNet-3 trained {JUDGE_EPOCHS} epochs on the real train split (seed {JUDGE_SEED}, no augmentation, "
        f"{how}); its test accuracy: {100 * test_acc:.2f} %.",
        "Agreement: share of a set's images the judge assigns to their own label; own-label probability: the judge's "
        "mean softmax probability of the label. Written by `python benchmarks/label_agreement.py`.",
        "",
        "| set | images | agreement % | own-label probability | disagreements (index: label->judged) |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
    write_text_atomic(text, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
