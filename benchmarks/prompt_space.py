"""How far distillation moves a text prior's prompt embeddings, what that does to the images,
and how much of the matching loss each latent space removes.

    python benchmarks/prompt_space.py       # reads the text-prior lane's sets, writes the two files below

For each set of the text-prior lane that optimises prompt embeddings (``text-prompt``: the
prompt embeddings alone, x_T frozen at its inversion; ``text-x_T+prompt``: both) and for
``text-x_T`` (x_T alone), at IPC 1 and 10:

- the prompt embeddings' move, ``‖e − e₀‖ / ‖e₀‖`` (mean over images, e₀ the class's encoded
  prompt it started from), beside the mean distance between two classes' prompts (same scale);
- whether each image's moved embedding is still nearest to its own class's prompt;
- the pixel RMS between the image decoded with the moved embedding and with the start one
  (same x_T, the distillation's sampler), in the normalised space the sets are stored in;
- the DM loss over the logged iterations (every 10th of 100): the mean of the first two logged
  values (iterations 10 and 20, so some progress is already in them) and of the last two
  (90 and 100), and their ratio.

Writes ``benchmarks/results/text_prior_mnist5k/prompt_space.json`` and ``.md``.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genprior.priors.load import load_prior  # noqa: E402
from genprior.synset import write_json_atomic  # noqa: E402

LANE = ROOT / "benchmarks" / "lanes" / "text-prior-mnist5k"
OUT = ROOT / "benchmarks" / "results" / "text_prior_mnist5k"
ROWS = ("text-prompt", "text-x_T", "text-x_T+prompt")


def loss_trend(log: Path) -> dict:
    losses = [json.loads(line)["loss"] for line in log.read_text().splitlines() if '"loss"' in line]
    first, last = statistics.mean(losses[:2]), statistics.mean(losses[-2:])
    return {"logged": len(losses), "loss_first": first, "loss_last": last, "ratio": last / first}


@torch.no_grad()
def measure(prior, table: torch.Tensor, set_dir: Path) -> dict:
    latents = load_file(set_dir / "latents.safetensors")
    labels = latents["labels"].long()
    out = {"images": int(labels.numel()), **loss_trend(set_dir / "log.jsonl")}
    emb = latents.get("latent.class_emb")
    if emb is not None:
        start = table[labels]
        x_T = latents["latent.x_T"]
        before = prior.decode({"x_T": x_T, "class_emb": start}, labels)
        after = prior.decode({"x_T": x_T, "class_emb": emb}, labels)
        out.update(
            embedding_move=float(((emb - start).norm(dim=1) / start.norm(dim=1)).mean()),
            prompt_gap=float(torch.pdist(table).mean() / table.norm(dim=1).mean()),
            nearest_own_prompt=float((torch.cdist(emb, table).argmin(1) == labels).float().mean()),
            pixel_rms_change=float((after - before).pow(2).mean().sqrt()),
            pixel_rms=float(before.pow(2).mean().sqrt()),
        )
    return out


def main() -> None:
    config = json.loads((LANE / "sets" / "text-prompt-ipc1-s0" / "config.json").read_text())
    prior = load_prior(config["prior"], **config["prior_options"])  # the sampler the distillation decoded with
    table = prior.class_table()
    results = {}
    for row in ROWS:
        for ipc in (1, 10):
            set_dir = LANE / "sets" / f"{row}-ipc{ipc}-s0"
            if (set_dir / "latents.safetensors").is_file():
                results[f"{row}|{ipc}"] = measure(prior, table, set_dir)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"prior": config["prior"], "prior_options": config["prior_options"], "rows": results},
                      OUT / "prompt_space.json")
    lines = ["# The prompt-embedding space of `mnist5k-text`, measured on the text-prior lane's sets", "",
             "Written by `benchmarks/prompt_space.py` (see its docstring for each column).", "",
             "| row | IPC | embedding move (‖e − e₀‖/‖e₀‖) | two prompts apart | nearest prompt is its own | "
             "pixel RMS change (image RMS) | DM loss first → last logged | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        row, ipc = key.split("|")
        if "embedding_move" in r:
            emb = (f"{r['embedding_move']:.3f} | {r['prompt_gap']:.3f} | {100 * r['nearest_own_prompt']:.0f} % | "
                   f"{r['pixel_rms_change']:.3f} ({r['pixel_rms']:.3f})")
        else:
            emb = "– | – | – | –"
        lines.append(f"| {row} | {ipc} | {emb} | {r['loss_first']:.1f} → {r['loss_last']:.1f} | {r['ratio']:.2f} |")
    (OUT / "prompt_space.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
