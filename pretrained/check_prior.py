"""Measure a shipped prior's class fidelity and write its model card.

    python pretrained/check_prior.py pretrained/mnist5k-stylegan

A ConvNet-3 trained on the real mnist5k train split (no augmentation, seed 0) classifies
100 class-conditional samples per class (1,000 in all); the share classified as their
label is the prior's quality figure. Writes ``quality.json``, ``samples.png`` and the
model card ``README.md`` (from ``prior.json``, ``training.json`` and ``quality.json``)
into the prior folder. The classifier is cached under ``runs/`` between calls.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genprior.baselines import prior_samples, train_embedding_net
from genprior.data import load_dataset
from genprior.evaluate import test_accuracy
from genprior.nets import create_net
from genprior.priors.load import load_prior
from genprior.synset import save_grid, write_json_atomic

CLASSIFIER_EPOCHS = 20
SAMPLES_PER_CLASS = 100


def classifier(train, test, cache: Path) -> torch.nn.Module:
    if cache.is_file():
        net = create_net("convnet", train.channels, train.num_classes, train.resolution)
        net.load_state_dict(load_file(str(cache)))
        return net.eval()
    net = train_embedding_net(train, seed=0, epochs=CLASSIFIER_EPOCHS)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file(net.state_dict(), str(cache))
    return net


def write_card(folder: Path) -> None:
    card = json.loads((folder / "prior.json").read_text())
    training = json.loads((folder / "training.json").read_text()) if (folder / "training.json").is_file() else {}
    quality = json.loads((folder / "quality.json").read_text())
    seconds = training.get("time_s", training.get("seconds", 0))
    device = training.get("device") or f"cpu ({training.get('args', {}).get('num_threads') or 'default'} thread(s))"
    weights = sorted(folder.rglob("*.safetensors"))
    size_mb = sum(p.stat().st_size for p in weights) / 2**20
    lines = [
        f"# {folder.name}",
        "",
        f"A {card['family']} prior shipped with genprior: {card['num_classes']} classes, "
        f"{card['channels']} channel(s), {card['resolution']} px. Latent spaces: {', '.join(card['latent_spaces'])} "
        f"(default {card['default_space']}).",
        "",
        "| | |",
        "|---|---|",
        f"| data | {training.get('data', card.get('dataset', '?'))} |",
        f"| command | `{training.get('command', '?')}` |",
        f"| steps | {training.get('steps', '?')} (batch {training.get('batch_size', '?')}) |",
        f"| training time | {seconds / 60:.1f} min on {device} |",
        f"| weights | {', '.join(str(p.relative_to(folder)) for p in weights)} ({size_mb:.1f} MB, safetensors) |",
        f"| quality | {100 * quality['sample_accuracy']:.1f}% of {quality['num_samples']} class-conditional samples "
        f"classified as their label by a ConvNet-3 trained on the real train split "
        f"(its real test accuracy: {100 * quality['classifier_test_accuracy']:.1f}%)"
        + (" at the prior's default sampler (" + ", ".join(f"{k} {v}" for k, v in quality["sampler"].items()) + ")"
           if quality.get("sampler") else "") + " |",
        "| licence | Apache-2.0 (weights trained by genprior) |",
        "",
        "![samples](samples.png)",
        "",
        "`samples.png`: 10 samples per class, one row per class. Measured by `python pretrained/check_prior.py "
        f"pretrained/{folder.name}`.",
    ]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("prior_dir")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    folder = Path(args.prior_dir)
    torch.set_num_threads(2)
    train, test = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    net = classifier(train, test, Path("runs") / f"classifier-{args.dataset}-convnet-{CLASSIFIER_EPOCHS}ep.safetensors")
    prior = load_prior(str(folder)).eval()
    t0 = time.time()
    synset = prior_samples(prior, train, SAMPLES_PER_CLASS, seed=args.seed)
    sample_time = time.time() - t0
    with torch.no_grad():
        preds = torch.cat([net(synset.images[i:i + 500]).argmax(1) for i in range(0, len(synset), 500)])
    per_class = [(preds[synset.labels == c] == c).float().mean().item() for c in range(train.num_classes)]
    quality = {
        "dataset": args.dataset,
        "num_samples": len(synset),
        "sample_accuracy": (preds == synset.labels).float().mean().item(),
        "per_class_accuracy": per_class,
        "classifier": f"convnet trained {CLASSIFIER_EPOCHS} epochs on the real {args.dataset} train split, seed 0",
        "classifier_test_accuracy": test_accuracy(net, test, torch.device("cpu")),
        "sampling_time_s": sample_time,
        "seed": args.seed,
    }
    card = json.loads((folder / "prior.json").read_text()) if (folder / "prior.json").is_file() else {}
    sampler = {k: card[k] for k in ("num_inference_steps", "guidance_scale") if k in card}
    if sampler:  # a diffusion prior's samples depend on its sampler's defaults
        quality["sampler"] = sampler
    write_json_atomic(quality, folder / "quality.json")
    keep = torch.cat([torch.nonzero(synset.labels == c).flatten()[:10] for c in range(train.num_classes)])
    save_grid(synset.pixels()[keep], synset.labels[keep], train.num_classes, folder / "samples.png")
    write_card(folder)
    print(json.dumps({k: v for k, v in quality.items() if k != "per_class_accuracy"}, indent=2))


if __name__ == "__main__":
    main()
