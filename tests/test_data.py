import hashlib
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from genprior.data import (
    DATASETS,
    DIGITS_MEAN,
    DIGITS_SPLIT_COUNTS,
    DIGITS_STD,
    IMAGENET_SUBSETS,
    MNIST5K_SPLIT_COUNTS,
    RealData,
    clear_cache,
    default_root,
    list_datasets,
    load_dataset,
)
from genprior.errors import DataNotFoundError, GenpriorError, UnknownNameError

ATOL = 1 / 255


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch):
    monkeypatch.delenv("GENPRIOR_DATA", raising=False)


@pytest.fixture(scope="module")
def mnist5k():
    clear_cache()
    return load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")


def _pixels(d: RealData) -> torch.Tensor:
    return d.denormalize(d.images)


def _row_hashes(images: torch.Tensor) -> set:
    return {hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in images}


def _one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# built-in datasets


def test_mnist5k_shapes_and_counts(mnist5k):
    train, test = mnist5k
    for split, d in zip(("train", "test"), mnist5k):
        assert d.images.dtype == torch.float32 and d.labels.dtype == torch.int64
        assert d.images.shape == (len(d), 1, 28, 28)
        assert (d.name, d.split, d.num_classes, d.channels, d.resolution) == ("mnist5k", split, 10, 1, 28)
        assert d.class_names == [str(c) for c in range(10)]
        assert set(d.labels.tolist()) == set(range(10))
        assert tuple(d.class_counts()) == MNIST5K_SPLIT_COUNTS[split]
    assert (len(train), len(test)) == (4000, 1000)


def test_mnist5k_split_is_disjoint(mnist5k):
    train, test = mnist5k
    assert not _row_hashes(train.images) & _row_hashes(test.images)


def test_mnist5k_split_is_deterministic(mnist5k):
    clear_cache()
    again = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    for before, after in zip(mnist5k, again):
        assert before.images is not after.images
        assert torch.equal(before.images, after.images) and torch.equal(before.labels, after.labels)


def test_mnist5k_is_normalised(mnist5k):
    train, _ = mnist5k
    assert abs(train.images.mean().item()) < 0.1
    assert 0.9 < train.images.std().item() < 1.1
    assert (train.mean, train.std) == ((0.1307,), (0.3081,))
    pixels = _pixels(train)
    assert pixels.min() > -1e-5 and pixels.max() < 1 + 1e-5


def test_digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    for split, d in (("train", train), ("test", test)):
        assert d.images.shape == (len(d), 1, 28, 28)
        assert d.num_classes == 10
        assert tuple(d.class_counts()) == DIGITS_SPLIT_COUNTS[split]
    assert len(train) + len(test) == 1797
    pixels = _pixels(train)
    assert pixels.mean().item() == pytest.approx(DIGITS_MEAN[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(DIGITS_STD[0], abs=1e-4)
    assert not _row_hashes(train.images) & _row_hashes(test.images)


def test_cache_shares_tensors_but_not_the_record():
    a = load_dataset("digits")
    b = load_dataset("digits")
    assert a.images is b.images
    a.images = a.images[:3]
    assert len(load_dataset("digits")) == len(b)


def test_resolution_resizes_builtin_data():
    d = load_dataset("digits", "test", resolution=32)
    assert d.images.shape[1:] == (1, 32, 32)
    with pytest.raises(GenpriorError, match="positive integer"):
        load_dataset("digits", resolution=0)


def test_realdata_helpers():
    d = load_dataset("digits", "train")
    idx = d.indices_of_class(3)
    assert len(idx) == d.class_counts()[3] and bool((d.labels[idx] == 3).all())
    assert torch.equal(d.images_of_class(3), d.images[idx])
    g = torch.Generator().manual_seed(0)
    picks = d.sample_class(3, 20, generator=g)
    assert picks.shape == (20, 1, 28, 28)
    assert len(_row_hashes(picks)) == 20
    assert _row_hashes(picks) <= _row_hashes(d.images_of_class(3))
    assert d.sample_class(3, len(idx) + 5).shape[0] == len(idx) + 5
    x01 = torch.rand(2, 1, 28, 28)
    assert torch.allclose(d.denormalize(d.normalize(x01)), x01, atol=1e-6)
    assert torch.allclose(d.normalize(x01[0]), d.normalize(x01)[0])
    assert d.denormalize(torch.full((1, 1, 2, 2), 10.0)).max() > 1


def test_registry_metadata():
    names = list_datasets()
    for expected in ("mnist5k", "digits", "mnist", "fashion_mnist", "svhn", "cifar10", "cifar100", "imagefolder"):
        assert expected in names
    assert set(IMAGENET_SUBSETS) <= set(names)
    for entry in DATASETS:
        assert {"summary", "channels", "resolution", "num_classes", "source"} <= set(entry.info)


def test_imagenet_subset_tables_are_consistent():
    expected = {"imagenette", "imagewoof", "imagefruit", "imagemeow", "imagesquawk", "imageyellow"}
    expected |= {f"imagenet_{x}" for x in "abcde"}
    assert set(IMAGENET_SUBSETS) == expected
    wnid_of = {}
    for subset in IMAGENET_SUBSETS.values():
        assert len(set(subset.indices)) == len(set(subset.wnids)) == len(subset.class_names) == 10
        # ImageNet class index i is the i-th wnid in sorted order
        assert sorted(subset.indices) == [i for _, i in sorted(zip(subset.wnids, subset.indices))]
        for index, wnid in zip(subset.indices, subset.wnids):
            assert 0 <= index < 1000 and wnid.startswith("n") and len(wnid) == 9
            assert wnid_of.setdefault(index, wnid) == wnid
    assert IMAGENET_SUBSETS["imagenette"].indices == (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)
    assert IMAGENET_SUBSETS["imagenette"].wnids[0] == "n01440764"


# local files in the real on-disk formats


def _write_cifar(root, folder, batches, meta_name, meta_key, label_key, num_classes, rng):
    base = root / folder
    base.mkdir(parents=True)
    written = {"train": ([], []), "test": ([], [])}
    for filename, n, split in batches:
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=n).tolist()
        with open(base / filename, "wb") as f:
            pickle.dump({"data": images.reshape(n, -1), label_key: labels}, f)
        written[split][0].append(images)
        written[split][1].extend(labels)
    with open(base / meta_name, "wb") as f:
        pickle.dump({meta_key: [f"class{c}" for c in range(num_classes)]}, f)
    return {s: (np.concatenate(x), y) for s, (x, y) in written.items()}


def _check_loaded(d: RealData, images: np.ndarray, labels) -> None:
    assert len(d) == len(labels)
    assert d.labels.tolist() == list(labels)
    expected = torch.from_numpy(np.ascontiguousarray(images)).float() / 255
    assert expected.shape == d.images.shape
    assert torch.allclose(_pixels(d), expected, atol=ATOL)


def test_cifar10_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    batches = [(f"data_batch_{i}", 3, "train") for i in range(1, 6)] + [("test_batch", 5, "test")]
    written = _write_cifar(tmp_path, "cifar-10-batches-py", batches, "batches.meta", "label_names", "labels", 10, rng)
    monkeypatch.delenv("GENPRIOR_TRUST_DATA", raising=False)
    with pytest.raises(GenpriorError, match="not the official cifar10 file .*GENPRIOR_TRUST_DATA=1"):
        load_dataset("cifar10", "train", root=tmp_path)  # pickles that are not the official ones are never unpickled
    monkeypatch.setenv("GENPRIOR_TRUST_DATA", "1")
    for split in ("train", "test"):
        d = load_dataset("cifar10", split, root=tmp_path)
        _check_loaded(d, *written[split])
        assert d.mean == (0.4914, 0.4822, 0.4465) and d.std == (0.2023, 0.1994, 0.2010)
        assert d.class_names == [f"class{c}" for c in range(10)]
    assert sum(len(load_dataset("cifar10", split, root=tmp_path)) for split in ("train", "test")) == 20


def test_cifar100_files_via_env(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    batches = [("train", 6, "train"), ("test", 4, "test")]
    written = _write_cifar(tmp_path, "cifar-100-python", batches, "meta", "fine_label_names", "fine_labels", 100, rng)
    monkeypatch.setenv("GENPRIOR_DATA", str(tmp_path))
    monkeypatch.setenv("GENPRIOR_TRUST_DATA", "1")  # files made here, not the official pickles
    assert default_root() == tmp_path
    for split in ("train", "test"):
        d = load_dataset("cifar100", split)
        _check_loaded(d, *written[split])
        assert d.num_classes == 100 and d.mean == (0.5071, 0.4866, 0.4409)


def _write_idx(raw, prefix, images, labels):
    n = len(labels)
    with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.tobytes())


@pytest.mark.parametrize("name, folder, mean", [("mnist", "MNIST", 0.1307), ("fashion_mnist", "FashionMNIST", 0.2861)])
def test_mnist_idx_files(tmp_path, name, folder, mean):
    rng = np.random.default_rng(2)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for split, prefix, n in (("train", "train", 7), ("test", "t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw, prefix, images, labels)
        written[split] = (images[:, None], labels.tolist())
    for split in ("train", "test"):
        d = load_dataset(name, split, root=tmp_path)
        _check_loaded(d, *written[split])
        assert d.mean == (mean,) and d.num_classes == 10


def test_svhn_mat_files(tmp_path):
    rng = np.random.default_rng(3)
    written = {}
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [10], [9], [5]][:n], dtype=np.uint8)
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = (x.transpose(3, 2, 0, 1), [0 if v == 10 else int(v) for v in y[:, 0]])
    for split in ("train", "test"):
        d = load_dataset("svhn", split, root=tmp_path)
        _check_loaded(d, *written[split])
        assert d.channels == 3 and d.class_names[0] == "0"


def _save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(4)
    expected = {"train": ([], []), "test": ([], [])}
    for split, folder in (("train", "train"), ("test", "val")):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(2):
                wide = rng.integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
                _save_png(tmp_path / folder / cls / f"{i}.png", wide)
                expected[split][0].append(wide[:, 4:36].transpose(2, 0, 1))
                expected[split][1].append(c)
    gray = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
    _save_png(tmp_path / "train" / "dog" / "2.png", gray)
    expected["train"][0].append(np.stack([gray] * 3))
    expected["train"][1].append(1)
    for split in ("train", "test"):
        d = load_dataset(f"imagefolder:{tmp_path}", split)
        _check_loaded(d, np.stack(expected[split][0]), expected[split][1])
        assert d.class_names == ["cat", "dog"] and d.resolution == 32 and d.mean == (0.485, 0.456, 0.406)
    assert load_dataset(f"imagefolder:{tmp_path}", resolution=16).images.shape[1:] == (3, 16, 16)


def test_imagenet_subset(tmp_path):
    rng = np.random.default_rng(5)
    subset = IMAGENET_SUBSETS["imagenette"]
    expected = {"train": ([], []), "test": ([], [])}
    for split, folder, n in (("train", "train", 2), ("test", "val", 1)):
        for c, wnid in enumerate(subset.wnids):
            for i in range(n):
                image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                _save_png(tmp_path / "imagenet" / folder / wnid / f"{wnid}_{i}.png", image)
                expected[split][0].append(image.transpose(2, 0, 1))
                expected[split][1].append(c)
    for split in ("train", "test"):
        d = load_dataset("imagenette", split, root=tmp_path, resolution=32)
        _check_loaded(d, np.stack(expected[split][0]), expected[split][1])
        assert d.class_names[:2] == ["tench", "English springer"]
    with pytest.raises(GenpriorError, match="32, 64, 128"):
        load_dataset("imagenette", root=tmp_path, resolution=48)


# errors that name the fix


def test_missing_root_names_the_flag_and_env():
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10")
    message = _one_line_error(err)
    assert "--data-root" in message and "GENPRIOR_DATA" in message


@pytest.mark.parametrize(
    "name, expected_path, hint",
    [
        ("cifar10", "cifar-10-batches-py", "CIFAR10("),
        ("cifar100", "cifar-100-python", "CIFAR100("),
        ("mnist", "MNIST/raw", "MNIST("),
        ("svhn", "train_32x32.mat", "SVHN("),
    ],
)
def test_missing_files_name_path_and_download(tmp_path, name, expected_path, hint):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(name, root=tmp_path)
    message = _one_line_error(err)
    assert str(tmp_path) in message and expected_path in message
    assert hint in message and "download=True" in message


def test_unreadable_image_is_named(tmp_path):
    for split in ("train", "val"):
        _save_png(tmp_path / split / "a" / "0.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"not an image")
    with pytest.raises(GenpriorError, match="cannot read the image .*1.png") as err:
        load_dataset(f"imagefolder:{tmp_path}")
    assert "\n" not in str(err.value)


def test_missing_imagefolder_split(tmp_path):
    _save_png(tmp_path / "train" / "a" / "0.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(f"imagefolder:{tmp_path}")
    assert str(tmp_path / "val") in _one_line_error(err)
    with pytest.raises(GenpriorError, match="imagefolder:PATH"):
        load_dataset("imagefolder")


def test_missing_imagenet_wnid_folder(tmp_path):
    subset = IMAGENET_SUBSETS["imagewoof"]
    for folder in ("train", "val"):
        for wnid in subset.wnids[:3]:
            _save_png(tmp_path / folder / wnid / "0.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("imagewoof", root=tmp_path, resolution=32)
    message = _one_line_error(err)
    assert str(tmp_path / "train" / subset.wnids[3]) in message and "image-net.org" in message
    with pytest.raises(DataNotFoundError, match="no ImageNet"):
        load_dataset("imagewoof", root=tmp_path / "elsewhere")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(UnknownNameError) as err:
        load_dataset("cifar11")
    message = _one_line_error(err)
    assert "cifar11" in message and "mnist5k" in message and "cifar10" in message
    with pytest.raises(GenpriorError, match="takes no path"):
        load_dataset("cifar10:/somewhere")


def test_bad_split():
    with pytest.raises(GenpriorError) as err:
        load_dataset("digits", "val")
    message = _one_line_error(err)
    assert "'train'" in message and "'test'" in message


def test_one_resize_for_every_size_change():
    """genprior.images.resize_images: antialiased bilinear, a no-op (the same tensor) at the size
    already or for None; the run's decode-to-data resize and the export's are this one."""
    import torch.nn.functional as F

    from genprior.images import resize_images

    x = torch.rand(2, 1, 32, 32)
    assert resize_images(x, 32) is x and resize_images(x, None) is x
    small = resize_images(x, 28)
    assert small.shape == (2, 1, 28, 28)
    assert torch.equal(small, F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False))
    assert not torch.equal(small, F.interpolate(x, size=(28, 28), mode="bilinear", antialias=False,
                                                align_corners=False))
