import json

import pytest
import torch
from torchvision.datasets import ImageFolder
import numpy as np
from PIL import Image

from genprior import synset as synset_mod
from genprior.errors import CorruptedSetError, GenpriorError
from genprior.synset import SyntheticSet, load_synset, save_synset

from conftest import make_synset


def read_image(path):
    array = np.asarray(Image.open(path))
    return torch.from_numpy(array.copy()).unsqueeze(0) if array.ndim == 2 else torch.from_numpy(array.copy()).permute(2, 0, 1)


def test_round_trip_is_exact(tmp_path):
    s = make_synset(ipc=3, num_classes=4, channels=3, soft=True)
    save_synset(s, tmp_path / "set")
    t = load_synset(tmp_path / "set")
    assert torch.equal(t.images, s.images)
    assert torch.equal(t.labels, s.labels)
    assert torch.equal(t.soft_labels, s.soft_labels)
    assert (t.mean, t.std, t.class_names) == (s.mean, s.std, s.class_names)
    assert (t.dataset, t.method, t.config, t.ipc) == (s.dataset, s.method, s.config, 3)


def test_pngs_load_with_imagefolder_in_label_order(tmp_path):
    s = make_synset(ipc=2, num_classes=12, channels=1)
    save_synset(s, tmp_path / "set")
    folder = ImageFolder(str(tmp_path / "set" / "images"))
    assert len(folder) == len(s)
    assert [folder.class_to_idx[c] for c in sorted(folder.class_to_idx)] == list(range(12))
    # the class folder index matches the label, and pixels match the stored tensor to 8 bits
    pixels = s.pixels()
    for (path, label) in folder.samples:
        img = read_image(path).float() / 255
        candidates = pixels[s.labels == label]
        assert min((img - c).abs().max().item() for c in candidates) <= 0.5 / 255 + 1e-6


def test_grid_and_meta_are_written(tmp_path):
    s = make_synset(ipc=3, num_classes=2, resolution=8)
    save_synset(s, tmp_path / "set")
    grid = read_image(str(tmp_path / "set" / "grid.png"))
    assert grid.shape == (1, 2 * (8 + 2) + 2, 3 * (8 + 2) + 2)
    meta = json.loads((tmp_path / "set" / "meta.json").read_text())
    assert meta["ipc"] == 3 and meta["num_classes"] == 2 and meta["method"] == "test"
    assert "torch" in meta["versions"]


def test_existing_directory_needs_overwrite(tmp_path):
    s = make_synset()
    save_synset(s, tmp_path / "set")
    with pytest.raises(GenpriorError, match="overwrite"):
        save_synset(s, tmp_path / "set")
    s2 = make_synset(seed=1)
    save_synset(s2, tmp_path / "set", overwrite=True)
    assert torch.equal(load_synset(tmp_path / "set").images, s2.images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_crash_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    s = make_synset()
    save_synset(s, tmp_path / "set")
    before = (tmp_path / "set" / "images.safetensors").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synset_mod, "save_grid", boom)
    with pytest.raises(RuntimeError):
        save_synset(make_synset(seed=1), tmp_path / "set", overwrite=True)
    with pytest.raises(RuntimeError):
        save_synset(s, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    assert (tmp_path / "set" / "images.safetensors").read_bytes() == before


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "images.safetensors").write_bytes((d / "images.safetensors").read_bytes()[:100]), "cannot be read"),
    (lambda d: (d / "meta.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "meta.json").unlink(), "meta.json is missing"),
    (lambda d: next((d / "images").glob("*/*.png")).unlink(), "partial"),
    (lambda d: (d / "meta.json").write_text((d / "meta.json").read_text().replace('"ipc": 2', '"ipc": 5')), "ipc=5"),
    (lambda d: (d / "meta.json").write_text((d / "meta.json").read_text().replace('"format_version": 1', '"format_version": 9')), "upgrade"),
])
def test_corruption_is_named(tmp_path, damage, message):
    save_synset(make_synset(ipc=2), tmp_path / "set")
    damage(tmp_path / "set")
    with pytest.raises(CorruptedSetError, match=message):
        load_synset(tmp_path / "set")


def test_missing_directory(tmp_path):
    with pytest.raises(CorruptedSetError, match="does not exist"):
        load_synset(tmp_path / "nothing")


@pytest.mark.parametrize("change, message", [
    (dict(labels=torch.tensor([0, 0, 1, 1, 2, 5])), "labels must lie"),
    (dict(labels=torch.tensor([0, 0, 0, 1, 1, 2])), "same number"),
    (dict(labels=torch.tensor([0, 0, 1, 1, 2])), "6 images but 5 labels"),
    (dict(images=torch.full((6, 1, 8, 8), float("nan"))), "NaN"),
    (dict(images=torch.zeros(6, 1, 8, 7)), "square"),
    (dict(images=torch.zeros(6, 3, 8, 8)), "channels"),
])
def test_invalid_sets_are_refused(change, message):
    s = make_synset(ipc=2, num_classes=3)
    fields = dict(images=s.images, labels=s.labels, mean=s.mean, std=s.std, dataset=s.dataset,
                  class_names=s.class_names, method=s.method)
    fields.update(change)
    with pytest.raises(GenpriorError, match=message):
        SyntheticSet(**fields)
