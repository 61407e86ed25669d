"""genprior push: the upload folder and its card offline, one-line failures without the network,
and a pushed folder loading back by its id from the local hub cache."""
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from genprior.cli import main
from genprior.errors import GenpriorError
from genprior.hub import push
from genprior.synset import load_synset

ROOT = Path(__file__).resolve().parent.parent
STYLEGAN = ROOT / "pretrained" / "mnist5k-stylegan"


@pytest.fixture(scope="module")
def evaluated_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("set") / "synset"
    assert main(["baseline", "random", str(out), "--ipc", "1", "--dataset", "digits"]) == 0
    assert main(["evaluate", str(out), "--epochs", "1", "--models", "2", "--device", "cpu"]) == 0
    return out


def test_a_set_is_staged_with_its_card(evaluated_set, tmp_path):
    done = push(evaluated_set, "someone/digits-random", license="cc-by-4.0", dry_run=True, stage_dir=tmp_path / "up")
    assert done["kind"] == "synset" and done["repo_type"] == "dataset" and "url" not in done
    card = (tmp_path / "up" / "README.md").read_text()
    report = json.loads(next(evaluated_set.glob("eval_*.json")).read_text())
    acc, meta = report["results"]["convnet"], json.loads((evaluated_set / "meta.json").read_text())
    for text in ("license: cc-by-4.0", "| method | random |", f"| data | digits (10 classes, {meta['resolution']} px",
                 "| images per class (IPC) | 1 (10 images) |",
                 f"| {report['protocol']['name']} | convnet | {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} | 2 |",
                 'load_synset("someone/digits-random")'):
        assert text in card, text
    staged, original = load_synset(tmp_path / "up"), load_synset(evaluated_set)
    assert torch.equal(staged.images, original.images) and torch.equal(staged.labels, original.labels)


def test_a_prior_and_a_trained_generator_are_told_apart(tmp_path):
    push(STYLEGAN, "someone/prior", dry_run=True, stage_dir=tmp_path / "p")
    card = (tmp_path / "p" / "README.md").read_text()
    assert "a generative prior for genprior" in card and "| family | stylegan |" in card and "## Quality" in card
    trained = tmp_path / "generator"
    shutil.copytree(STYLEGAN, trained)
    info = json.loads((trained / "prior.json").read_text())
    info.update(trained_by="genprior generator loop", method="dim", command="python recipes/dim.py --iterations 5")
    (trained / "prior.json").write_text(json.dumps(info))
    done = push(trained, "someone/dim", dry_run=True, stage_dir=tmp_path / "g")
    card = (tmp_path / "g" / "README.md").read_text()
    assert done["kind"] == "generator" and "| method | dim |" in card and "`python recipes/dim.py --iterations 5`" in card


def test_bad_input_and_no_network_fail_at_once_in_one_line(evaluated_set, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    def error(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("genprior: error:") and "\n" not in err
        return err

    assert "neither a synthetic set" in error(["push", str(tmp_path), "a/b"])
    assert "not a folder" in error(["push", str(tmp_path / "nowhere"), "a/b"])
    assert "owner/name" in error(["push", str(evaluated_set), "just-a-name", "--dry-run"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert "not empty" in error(["push", str(evaluated_set), "a/b", "--dry-run", "--stage-dir", str(tmp_path / "full")])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE is set" in error(["push", str(evaluated_set), "a/b"])
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert "no Hugging Face token" in error(["push", str(evaluated_set), "a/b"])
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.time()
    assert "cannot reach the Hugging Face hub" in error(["push", str(evaluated_set), "a/b", "--token", "x"])
    assert time.time() - t0 < 10


def test_a_pushed_folder_loads_back_by_its_id_from_the_local_cache(evaluated_set, tmp_path, monkeypatch):
    """The hub is stood in for by its cache layout: what push uploads lands where a download
    would put it, then loads offline by its id."""
    import huggingface_hub
    import huggingface_hub.constants

    from genprior import hub
    from genprior.priors.load import load_prior

    cache = tmp_path / "cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "_probe", lambda endpoint: None)

    def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
        return f"https://hub.example/{repo_type}s/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
        """Into the cache as a download would bring it: only the files genprior's loaders ask for."""
        from huggingface_hub.utils import filter_repo_objects

        from genprior.priors.load import HUB_PATTERNS
        from genprior.synset import HUB_SET_PATTERNS

        repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / ("1" * 40)
        files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        patterns = HUB_SET_PATTERNS if repo_type == "dataset" else HUB_PATTERNS
        for name in filter_repo_objects(files, allow_patterns=patterns):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(folder_path) / name, snapshot / name)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("1" * 40)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    done = push(evaluated_set, "someone/digits-random", token="x")
    assert done["url"] == "https://hub.example/datasets/someone/digits-random" and done["staged"] is None
    push(STYLEGAN, "someone/mnist-stylegan", token="x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    back, original = load_synset("someone/digits-random"), load_synset(evaluated_set)
    assert torch.equal(back.images, original.images) and back.method == original.method
    prior, shipped = load_prior("someone/mnist-stylegan"), load_prior(str(STYLEGAN))
    labels = torch.arange(3)
    latents = shipped.init_latents(labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(prior.decode(latents, labels), shipped.decode(latents, labels))
    with pytest.raises(GenpriorError, match="no such folder.*not in the local cache and HF_HUB_OFFLINE is set"):
        load_synset("someone/never-pushed")
