"""Datasets as whole-split tensors, and a fast batch iterator with augmentation on tensors.

Reading and downloading the files is torchvision's job (``torchvision.datasets``), except for
Tiny ImageNet, which torchvision has no class for: its official zip is downloaded with
torchvision's ``download_url`` and read here without being extracted. This module adds what a
replication needs on top:

* the data root comes from ``REPLIB_DATA`` (default ``<repo>/data/datasets``);
* a dataset missing offline raises :class:`DatasetMissingError` naming the folder and files;
* a corrupt or truncated file raises :class:`DatasetCorruptError` (never loaded silently);
* a rebuilt local copy carrying a ``MANIFEST.json`` of sha256 sums loads after its manifest is
  checked, with a warning, and :attr:`Split.provenance` says which copy was used;
* the whole split is kept as uint8 tensors and normalized on the fly, batch by batch, on the
  compute device; augmentation (pad-and-crop, horizontal flip) happens on tensors too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import repo_root

log = logging.getLogger(__name__)


class DatasetMissingError(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but its bytes are not the expected ones."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str
    files: tuple[str, ...]
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    md5: dict[str, str] = field(default_factory=dict)


# MD5 sums of the official uncompressed files (torchvision only checks the gz archives on
# download; we check what is on disk, so a truncated file cannot be parsed silently).
_MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_FMNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# Official CIFAR pickles (torchvision's lists).
_CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}
# Tiny ImageNet (Stanford CS231n): one official zip of JPEGs, 248,100,043 bytes; torchvision
# has no class for it, so the archive itself is the checked file and is read without being
# extracted. 200 classes, 500 training images each; the 10,000 labelled validation images are
# the test split (the official test images carry no labels), as in the papers that report it.
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_MD5 = {"tiny-imagenet-200.zip": "90528d7ca1a48142e341f4ef8d21d0de"}

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", "MNIST/raw", tuple(_MNIST_MD5), 10, (1, 28, 28), (0.1307,), (0.3081,), _MNIST_MD5
    ),
    "fashionmnist": DatasetInfo(
        "fashionmnist", "FashionMNIST/raw", tuple(_FMNIST_MD5), 10, (1, 28, 28),
        (0.2860,), (0.3530,), _FMNIST_MD5,
    ),
    "cifar10": DatasetInfo(
        "cifar10", "cifar-10-batches-py", tuple(_CIFAR10_MD5), 10, (3, 32, 32),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _CIFAR10_MD5,
    ),
    "cifar100": DatasetInfo(
        "cifar100", "cifar-100-python", tuple(_CIFAR100_MD5), 100, (3, 32, 32),
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), _CIFAR100_MD5,
    ),
    # Per-channel mean and standard deviation over all training pixels, as the CIFAR entries
    # (the values in common use; a per-image-averaged std, 0.230/0.227/0.226, also circulates).
    "tinyimagenet": DatasetInfo(
        "tinyimagenet", "tiny-imagenet", tuple(_TINY_MD5), 200, (3, 64, 64),
        (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), _TINY_MD5,
    ),
    # ILSVRC2012 in the ImageFolder layout of PyTorch's ImageNet example (``train/<wnid>/*`` and
    # ``val/<wnid>/*``, the validation images sorted into class folders); too large to hold in
    # memory, so it is streamed (:class:`StreamSplit`). Its "files" are the two folders, checked
    # by their class folders and image counts (no checksums exist for an extracted copy).
    "imagenet": DatasetInfo(
        "imagenet", "imagenet", ("train", "val"), 1000, (3, 224, 224),
        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
    ),
}
IMAGENET_COUNTS = {"train": 1_281_167, "val": 50_000}
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
SPLITS = ("train", "test")


def names() -> list[str]:
    return sorted(DATASETS)


def check_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not known; allowed values: {names()}")
    return DATASETS[name]


def data_root() -> Path:
    """``REPLIB_DATA`` or ``<repo>/data/datasets``."""
    return Path(os.environ.get("REPLIB_DATA") or repo_root() / "data" / "datasets")


def cache_root() -> Path:
    return Path(os.environ.get("REPLIB_CACHE") or repo_root() / "data" / "cache")


@dataclass
class Split:
    """A whole dataset split as tensors: uint8 images (N, C, H, W) and int64 labels."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    provenance: dict

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor, suffix: str = "subset") -> Split:
        prov = dict(self.provenance, subset=f"{suffix}: {len(idx)} of {len(self)}")
        return Split(self.name, self.split, self.images[idx], self.labels[idx], self.info, prov)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.name, self.split, self.images.to(device), self.labels.to(device),
                     self.info, self.provenance)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float, scaled to [0, 1] then standardized with the dataset statistics.

        ``(x / 255 - mean) / std`` computed in place on one new float tensor (the input is
        never modified), with the mean and std tensors cached per device.
        """
        return _normalize(self.info, images)


def _normalize(info: DatasetInfo, images: torch.Tensor) -> torch.Tensor:
    mean, std = _stats(info, images.device)
    x = images.to(torch.float32, copy=True)
    return x.div_(255.0).sub_(mean).div_(std)


@dataclass
class StreamSplit:
    """A split too large for memory (ImageNet): image files with int64 labels, decoded batch by
    batch by :func:`batches` in DataLoader workers. Same interface as :class:`Split` where the
    training code needs one (``len``, ``labels``, ``subset``, ``to``, ``normalize``); ``to``
    only records the device the batches go to."""

    name: str
    split: str
    files: list[str]
    labels: torch.Tensor
    info: DatasetInfo
    provenance: dict
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor, suffix: str = "subset") -> StreamSplit:
        keep = idx.cpu()
        prov = dict(self.provenance, subset=f"{suffix}: {len(keep)} of {len(self)}")
        return StreamSplit(self.name, self.split, [self.files[i] for i in keep.tolist()],
                           self.labels[keep], self.info, prov, self.device)

    def to(self, device: torch.device | str) -> StreamSplit:
        return StreamSplit(self.name, self.split, self.files, self.labels, self.info,
                           self.provenance, torch.device(device))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return _normalize(self.info, images)


_STATS: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _stats(info: DatasetInfo, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (1, C, 1, 1) mean and std tensors of a dataset on ``device`` (built once)."""
    key = (info.name, str(device))
    if key not in _STATS:
        _STATS[key] = (torch.tensor(info.mean, device=device).view(1, -1, 1, 1),
                       torch.tensor(info.std, device=device).view(1, -1, 1, 1))
    return _STATS[key]


def _file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes (``algorithm``: a :func:`hashlib.new` name), read in 1 MiB
    chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _md5(path: Path) -> str:
    return _file_digest(path, "md5")


def _sha256(path: Path) -> str:
    return _file_digest(path, "sha256")


def _try_download(info: DatasetInfo, root: Path) -> bool:
    """Ask torchvision to download (Tiny ImageNet: its official zip, through torchvision's
    ``download_url`` with the MD5 check); False when offline or the download fails."""
    import torchvision.datasets as tvd

    try:
        root.mkdir(parents=True, exist_ok=True)
        if info.name == "tinyimagenet":
            from torchvision.datasets.utils import download_url

            (name, md5), = info.md5.items()
            download_url(TINY_IMAGENET_URL, str(root / info.folder), filename=name, md5=md5)
            return True
        cls = {"mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST,
               "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[info.name]
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
        return True
    except Exception as exc:  # network errors come in many types
        log.info("download of %s failed: %s", info.name, exc)
        return False


def verify(name: str, root: Path | None = None, download: bool = True) -> dict:
    """Check the files of a dataset on disk; return the provenance of the copy found.
    Missing files are downloaded unless ``download`` is False or ``REPLIB_OFFLINE=1``.

    Official bytes are checked against their MD5 sums. A rebuilt copy with a
    ``MANIFEST.json`` is checked against the manifest's sha256 sums (with a warning that it is
    not the official release). Missing files raise :class:`DatasetMissingError`, wrong bytes
    raise :class:`DatasetCorruptError`.
    """
    info = check_name(name)
    root = Path(root) if root is not None else data_root()
    folder = root / info.folder
    if name == "imagenet":
        return _verify_image_folder(info, root)[0]
    missing = [f for f in info.files if not (folder / f).exists()]
    if missing:
        if (download and os.environ.get("REPLIB_OFFLINE") != "1"
                and _try_download(info, root)):
            missing = [f for f in info.files if not (folder / f).exists()]
        if missing:
            raise DatasetMissingError(
                f"dataset {name!r} not found in {folder} and could not be downloaded; "
                f"expected files: {list(info.files)} (missing: {missing}). Set REPLIB_DATA "
                f"to a folder holding torchvision's layout, or run where the internet is "
                f"reachable so torchvision downloads it."
            )
    manifest_path = folder / "MANIFEST.json"
    bad = {f: _md5(folder / f) for f in info.files}
    bad = {f: h for f, h in bad.items() if h != info.md5[f]}
    if not bad:
        return {"dataset": name, "root": str(root), "copy": "official", "check": "md5"}
    if not manifest_path.exists():
        f, h = next(iter(bad.items()))
        size = (folder / f).stat().st_size
        raise DatasetCorruptError(
            f"dataset {name!r}: file {folder / f} ({size} bytes) has md5 {h}, expected "
            f"{info.md5[f]} (truncated or corrupt); delete it to download again"
        )
    manifest = _read_manifest(manifest_path)
    sums = manifest.get("sha256", {})
    for f in info.files:
        if f not in sums:
            raise DatasetCorruptError(f"{manifest_path} lists no sha256 for {f}")
        got = _sha256(folder / f)
        if got != sums[f]:
            raise DatasetCorruptError(
                f"dataset {name!r}: file {folder / f} has sha256 {got}, but {manifest_path} "
                f"says {sums[f]} (truncated or corrupt)"
            )
    warnings.warn(
        f"dataset {name!r} at {folder} is a rebuilt copy, not the official bytes; loaded "
        f"after checking its MANIFEST.json ({manifest.get('exactness', 'no exactness note')})",
        stacklevel=2,
    )
    return {"dataset": name, "root": str(root), "copy": "manifest", "check": "sha256",
            "test_images": manifest.get("test_images"), "exactness": manifest.get("exactness")}


def _read_manifest(path: Path) -> dict:
    """A rebuilt copy's ``MANIFEST.json``; :class:`DatasetCorruptError` when it is unreadable."""
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetCorruptError(
            f"{path} is not valid JSON ({exc}); restore it from the source of this rebuilt "
            f"copy, or replace the copy with the official files"
        ) from exc
    if not isinstance(manifest, dict):
        raise DatasetCorruptError(f"{path} holds a {type(manifest).__name__}, not a JSON "
                                  f"object; restore it from the source of this rebuilt copy")
    return manifest


def _image_folder(split_dir: Path) -> tuple[list[str], list[str]]:
    """``(classes, files)`` of an ImageFolder split: sorted class folders, and each class's
    image files (by suffix, sorted) as paths relative to ``split_dir``."""
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    files = []
    for c in classes:
        files += sorted(f"{c}/{e.name}" for e in os.scandir(split_dir / c)
                        if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))
    return classes, files


def _verify_image_folder(info: DatasetInfo, root: Path
                         ) -> tuple[dict, dict[str, tuple[list[str], list[str]]]]:
    """Check ImageNet's ImageFolder copy: both folders present, the same 1000 class folders in
    each, and the official number of images per split (a rebuilt copy's ``MANIFEST.json`` may
    give its own ``counts``, with a warning). ImageNet is never downloaded (its licence asks
    for a login at image-net.org). Returns the provenance and the listing of each folder
    (:func:`_image_folder`), so that :func:`load` does not list 1.3M files twice."""
    folder = root / info.folder
    missing = [d for d in info.files if not (folder / d).is_dir()]
    if missing:
        raise DatasetMissingError(
            f"dataset 'imagenet' not found in {folder} (missing: {missing}); expected ILSVRC2012 "
            f"in the ImageFolder layout: {folder}/train/<wnid>/*.JPEG and "
            f"{folder}/val/<wnid>/*.JPEG (the 50,000 validation images sorted into their class "
            f"folders). ImageNet cannot be downloaded automatically: its licence asks for a "
            f"login at image-net.org.")
    manifest_path = folder / "MANIFEST.json"
    manifest = _read_manifest(manifest_path) if manifest_path.exists() else None
    expected = manifest.get("counts", IMAGENET_COUNTS) if manifest else IMAGENET_COUNTS
    listings = {d: _image_folder(folder / d) for d in info.files}
    classes = {d: cls for d, (cls, _) in listings.items()}
    for d, (cls, files) in listings.items():
        if len(cls) != info.num_classes:
            raise DatasetCorruptError(f"dataset 'imagenet': {folder / d} has {len(cls)} class "
                                      f"folders, expected {info.num_classes}")
        if len(files) != expected[d]:
            raise DatasetCorruptError(f"dataset 'imagenet': {folder / d} has {len(files)} "
                                      f"images, expected {expected[d]} (an incomplete copy?)")
    if classes["train"] != classes["val"]:
        odd = sorted(set(classes["train"]) ^ set(classes["val"]))[:5]
        raise DatasetCorruptError(f"dataset 'imagenet': train and val class folders differ "
                                  f"(e.g. {odd})")
    prov = {"dataset": "imagenet", "root": str(root), "check": "class folders and counts",
            "copy": "manifest" if manifest else "image-folder", "counts": dict(expected)}
    if manifest:
        warnings.warn(f"dataset 'imagenet' at {folder} is a rebuilt copy with its own counts "
                      f"({manifest.get('exactness', 'no exactness note')})", stacklevel=2)
        prov["exactness"] = manifest.get("exactness")
    return prov, listings


def available(name: str, root: Path | None = None, download: bool = True) -> tuple[bool, str]:
    """Whether dataset ``name`` can be loaded here (on disk and intact, or downloadable unless
    ``download`` is False or ``REPLIB_OFFLINE=1``), and the reason when it cannot. Notebooks
    ask this before they build the runs of a dataset, so that an offline ``make reproduce``
    plans no run that must fail and shows the entries as not run with this reason."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a checked rebuilt copy is available
            verify(name, root, download)
        return True, ""
    except (DatasetMissingError, DatasetCorruptError) as exc:
        return False, f"data not available offline: {name} ({type(exc).__name__})"


def _read_idx(path: Path) -> torch.Tensor:
    import numpy as np

    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetCorruptError(f"{path}: expected {dims} values, found {data.size}")
    return torch.from_numpy(data.copy()).view(*dims)


def _read_cifar(
    folder: Path, files: list[str], label_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    xs, ys = [], []
    for f in files:
        with open(folder / f, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.extend(entry[label_key])
    return torch.from_numpy(np.concatenate(xs)), torch.tensor(ys, dtype=torch.int64)


def _read_tiny_imagenet(archive: Path, split: str,
                        size: tuple[int, int] = (64, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny ImageNet's ``split`` read straight from its zip: uint8 (N, 3, 64, 64), int64 labels.

    Classes are the sorted WordNet ids of ``wnids.txt`` (the order ``ImageFolder`` would give).
    ``train``: ``train/<wnid>/images/*.JPEG``, by class then file name. ``test``: the labelled
    validation images, in the order of ``val/val_annotations.txt``. Grey-scale JPEGs (a few
    hundred in the official set) are converted to RGB. A file that is missing from the archive,
    does not decode, or is not 64x64 raises :class:`DatasetCorruptError`.
    """
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DatasetCorruptError(f"{archive}: not a readable zip archive ({exc})") from exc
    with zf:
        names = set(zf.namelist())
        base = "tiny-imagenet-200"
        wnids_file = f"{base}/wnids.txt"
        if wnids_file not in names:
            raise DatasetCorruptError(f"{archive}: no {wnids_file} (not a Tiny ImageNet archive)")
        wnids = sorted(zf.read(wnids_file).decode().split())
        index = {w: i for i, w in enumerate(wnids)}
        if split == "train":
            files, labels = [], []
            for n in sorted(names):
                parts = n.split("/")
                if (len(parts) == 5 and parts[1] == "train" and parts[3] == "images"
                        and parts[4].upper().endswith(".JPEG")):
                    if parts[2] not in index:
                        raise DatasetCorruptError(f"{archive}: {n} has a class not in wnids.txt")
                    files.append(n)
                    labels.append(index[parts[2]])
        else:
            ann = f"{base}/val/val_annotations.txt"
            if ann not in names:
                raise DatasetCorruptError(f"{archive}: no {ann}")
            files, labels = [], []
            for line in zf.read(ann).decode().splitlines():
                if not line.strip():
                    continue
                fname, wnid = line.split("\t")[:2]
                if wnid not in index:
                    raise DatasetCorruptError(f"{archive}: {ann} names a class not in wnids.txt: "
                                              f"{wnid}")
                files.append(f"{base}/val/images/{fname}")
                labels.append(index[wnid])
        if not files:
            raise DatasetCorruptError(f"{archive}: no {split} images found")
        out = np.empty((len(files), 3, *size), dtype=np.uint8)
        for i, n in enumerate(files):
            try:
                with Image.open(io.BytesIO(zf.read(n))) as im:
                    arr = np.asarray(im.convert("RGB"))
            except Exception as exc:  # KeyError (missing member), PIL's decode errors, ...
                raise DatasetCorruptError(f"{archive}: {n} cannot be read as an image "
                                          f"({type(exc).__name__}: {exc})") from exc
            if arr.shape[:2] != size:
                raise DatasetCorruptError(f"{archive}: {n} is {arr.shape[1]}x{arr.shape[0]}, "
                                          f"expected {size[1]}x{size[0]}")
            out[i] = arr.transpose(2, 0, 1)
    return torch.from_numpy(out), torch.tensor(labels, dtype=torch.int64)


def _parse(info: DatasetInfo, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if info.name == "tinyimagenet":
        return _read_tiny_imagenet(folder / info.files[0], split)
    if info.name in ("mnist", "fashionmnist"):
        prefix = "train" if split == "train" else "t10k"
        x = _read_idx(folder / f"{prefix}-images-idx3-ubyte").unsqueeze(1)
        y = _read_idx(folder / f"{prefix}-labels-idx1-ubyte").long()
        return x, y
    if info.name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        return _read_cifar(folder, files, "labels")
    return _read_cifar(folder, [split], "fine_labels")


def load(name: str, split: str = "train", device: torch.device | str = "cpu") -> Split:
    """The whole split as uint8 image and int64 label tensors (checked, cached)."""
    info = check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not known; allowed values: {list(SPLITS)}")
    root = data_root()
    folder = root / info.folder
    if name == "imagenet":  # streamed from its files; "test" is the validation set
        sub = "train" if split == "train" else "val"
        prov, listings = _verify_image_folder(info, root)
        classes, files = listings[sub]
        d = folder / sub
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[f.split("/", 1)[0]] for f in files], dtype=torch.int64)
        prov = dict(prov, split=split, n=len(files), folder=str(d))
        return StreamSplit(name, split, [str(d / f) for f in files], labels, info,
                           prov).to(device)
    key = None
    if all((folder / f).exists() for f in info.files):
        stamp = "-".join(
            f"{(folder / f).stat().st_size}.{int((folder / f).stat().st_mtime)}"
            for f in info.files
        )
        key = hashlib.sha1(f"{folder.resolve()}|{stamp}".encode()).hexdigest()[:12]
    cache = cache_root() / f"{name}-{split}-{key}.pt"
    loaded = None
    if key is not None and cache.exists():
        try:  # files unchanged (same sizes and mtimes) since they were verified and parsed
            x, y, prov_json = torch.load(cache, weights_only=True)
            loaded = x, y, json.loads(prov_json)
        except Exception:
            cache.unlink(missing_ok=True)
    if loaded is None:
        prov = verify(name, root)
        x, y = _parse(info, folder, split)
        if key is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            torch.save((x, y, json.dumps(prov)), tmp)
            os.replace(tmp, cache)
    else:
        x, y, prov = loaded
        if prov.get("copy") == "manifest":
            warnings.warn(f"dataset {name!r} at {folder} is a rebuilt copy (MANIFEST.json "
                          "checked), not the official bytes", stacklevel=2)
    if x.shape[1:] != info.shape or len(x) != len(y):
        raise DatasetCorruptError(f"{name}/{split}: unexpected shapes {tuple(x.shape)}, {len(y)}")
    prov = dict(prov, split=split, n=len(y))
    return Split(name, split, x, y, info, prov).to(device)


def train_val_split(split: Split, val_size: int, seed: int = 0) -> tuple[Split, Split]:
    """Carve a validation set from the training split (never tune on the test set)."""
    if not 0 < val_size < len(split):
        raise ValueError(f"val_size={val_size} must be in (0, {len(split)})")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split), generator=g).to(split.labels.device)
    return split.subset(perm[val_size:], "train minus val"), split.subset(perm[:val_size], "val")


def augment(images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, on a uint8 batch tensor.

    Draws, in this order, the horizontal and vertical crop offsets (``randint(0, 2 pad + 1)``
    per image) and the flip coins (``rand < 0.5``) from ``generator``. The crop reads each
    image's window from ``unfold`` views of the padded batch (one gather, no per-pixel index
    tensors); on the CPU the flip rewrites only the flipped images. ``images`` itself is
    never modified.
    """
    n, _, h, w = images.shape
    if pad:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (n, C, 2 pad + 1, 2 pad + 1, h, w)
        images = windows[torch.arange(n, device=images.device), :, dy, dx]  # (n, C, h, w)
    if flip:
        do = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        if images.device.type == "cpu":  # boolean masks are slow on CPU; copy the few flipped
            images = images.clone() if not pad else images.contiguous()
            sel = do.nonzero().view(-1)
            images.index_copy_(0, sel, images.index_select(0, sel).flip(3))
        else:  # no host synchronization on accelerators
            images = torch.where(do.view(n, 1, 1, 1), images.flip(3), images)
    return images


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    pad: int = 0,
    flip: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalized (images, labels) batches; the order depends only on ``seed``.

    Shuffling and augmentation draw from a generator seeded with ``seed``, so an epoch can be
    replayed exactly (which is what makes resume-from-checkpoint give the same history).
    A :class:`StreamSplit` is decoded in DataLoader workers; ``pad`` or ``flip`` then ask for
    ImageNet's training augmentation instead (:class:`_DecodeImages`).
    """
    if isinstance(split, StreamSplit):
        yield from _stream_batches(split, batch_size, shuffle, seed, pad > 0 or flip, drop_last)
        return
    g = torch.Generator().manual_seed(seed)
    n = len(split)
    order = torch.randperm(n, generator=g).to(split.labels.device) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:  # in order: views of the split, no gather
            x = split.images[start:start + batch_size]
            y = split.labels[start:start + batch_size]
        else:  # index_select: many times faster than x[idx] on the CPU
            idx = order[start:start + batch_size]
            x = split.images.index_select(0, idx)
            y = split.labels.index_select(0, idx)
        if pad or flip:
            x = augment(x, pad, flip, g)
        yield split.normalize(x), y


class _DecodeImages(torch.utils.data.Dataset):
    """Position ``k`` of an epoch's ``order`` as a uint8 (3, S, S) tensor and its label.

    Training (``train``): the random-resized crop of the ImageNet recipe (an area fraction in
    [0.08, 1] and an aspect ratio in [3/4, 4/3], log-uniform; 10 tries, then the central crop
    of the largest allowed shape) resized to S x S, then a horizontal flip with probability
    1/2. Evaluation: the shorter side resized to S * 256 / 224, then the central S x S crop.
    Every random draw comes from ``random.Random`` seeded by ``(seed, k)``, so an epoch is the
    same whatever the number of workers, and a resumed run replays it exactly.
    """

    def __init__(self, files: list[str], labels: torch.Tensor, order: list[int], train: bool,
                 seed: int, size: int) -> None:
        self.files, self.labels, self.order = files, labels, order
        self.train, self.seed, self.size = train, seed, size

    def __len__(self) -> int:
        return len(self.order)

    @staticmethod
    def _crop_box(w: int, h: int, rng: random.Random) -> tuple[int, int, int, int]:
        area = w * h
        for _ in range(10):
            target = area * rng.uniform(0.08, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw = int(round(math.sqrt(target * ratio)))
            ch = int(round(math.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                x0 = rng.randint(0, w - cw)
                y0 = rng.randint(0, h - ch)
                return x0, y0, x0 + cw, y0 + ch
        ratio = w / h  # fallback: the central crop, aspect ratio clamped to [3/4, 4/3]
        if ratio < 3 / 4:
            cw, ch = w, int(round(w / (3 / 4)))
        elif ratio > 4 / 3:
            cw, ch = int(round(h * 4 / 3)), h
        else:
            cw, ch = w, h
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return x0, y0, x0 + cw, y0 + ch

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np
        from PIL import Image

        i = self.order[k]
        s = self.size
        try:
            with Image.open(self.files[i]) as im:
                im = im.convert("RGB")
        except Exception as exc:
            raise DatasetCorruptError(f"{self.files[i]} cannot be read as an image "
                                      f"({type(exc).__name__}: {exc})") from exc
        if self.train:
            rng = random.Random(self.seed * 1_000_003 + k)
            im = im.resize((s, s), Image.Resampling.BILINEAR, box=self._crop_box(*im.size, rng))
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            w, h = im.size
            short = round(s * 256 / 224)
            nw, nh = (short, max(short, round(h * short / w))) if w <= h else (
                max(short, round(w * short / h)), short)
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            x0, y0 = (nw - s) // 2, (nh - s) // 2
            im = im.crop((x0, y0, x0 + s, y0 + s))
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy())
        return x, self.labels[i]


def loader_workers() -> int:
    """DataLoader worker processes for streamed splits: ``REPLIB_WORKERS``, else up to 8."""
    env = os.environ.get("REPLIB_WORKERS")
    if env is not None:
        if not env.isdigit():
            raise ValueError(f"REPLIB_WORKERS={env!r} must be an integer >= 0")
        return int(env)
    return min(8, os.cpu_count() or 1)


def _stream_batches(split: StreamSplit, batch_size: int, shuffle: bool, seed: int,
                    train: bool, drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    n = len(split)
    order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    ds = _DecodeImages(split.files, split.labels, order, train, seed, split.info.shape[-1])
    workers = loader_workers()
    cuda = split.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, drop_last=drop_last, num_workers=workers,
        pin_memory=cuda, persistent_workers=False, prefetch_factor=4 if workers else None)
    for x, y in loader:
        x = x.to(split.device, non_blocking=cuda)
        yield split.normalize(x), y.to(split.device, non_blocking=cuda)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
