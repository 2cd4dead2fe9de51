"""Datasets and loaders: decode every photo once into a memory-mapped uint8 cache (decoding
costs more than augmenting), then train from it. In a module, not a notebook, so that
loader workers started fresh (Windows, macOS) can import the classes."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .images import load_square
from .plumbing import (
    atomic_path,
    held,
    map_chunks,
    remove_stale_temporaries,
    replace_durably,
    unique_sibling,
)
from .tools import distributed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageCache:
    """``path`` holds ``(N, size, size, 3)`` uint8 images, one per row of ``rows``; ``ok[i]``
    is False where image ``i`` did not decode."""

    path: Path
    rows: pd.DataFrame
    ok: np.ndarray
    size: int

    def array(self) -> np.ndarray:
        """The images, memory-mapped read-only."""
        return np.load(self.path, mmap_mode="r")


def cache_key(rows: pd.DataFrame, size: int) -> str:
    """A short name for the cache of these files at this size."""
    digest = hashlib.sha1(f"{size}".encode())
    for path, sha in zip(rows["path"], rows["sha256"], strict=True):
        digest.update(f"{path}\0{sha}\n".encode(errors="surrogateescape"))
    return digest.hexdigest()[:16]


def _decode_chunk(paths: list[str], size: int) -> tuple[np.ndarray, list[str]]:
    images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    errors = []
    for i, path in enumerate(paths):
        try:
            images[i] = load_square(path, size)
            errors.append("")
        except Exception as err:  # any decoder failure: skip this image, keep the cache
            errors.append(f"{type(err).__name__}: {err}"[:200])
    return images, errors


def build_cache(
    image_root: str | os.PathLike[str],
    rows: pd.DataFrame,
    cache_dir: str | os.PathLike[str],
    size: int,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> ImageCache:
    """Decode the files in ``rows`` (``path``, ``sha256``) into a square uint8 cache, or reuse
    a finished one; built by one process at a time and renamed into place only when whole."""
    rows = rows[["path", "sha256"]].reset_index(drop=True)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"images-{size}px-{cache_key(rows, size)}.npy"
    found = _finished_cache(path, rows, size)
    if found is not None:
        return found
    with held(path.with_suffix(".lock"), f"building the decoded cache {path.name}"):
        found = _finished_cache(path, rows, size)  # built by another process meanwhile?
        if found is not None:
            return found
        names = rows["path"].tolist()
        ok = _decode_into(path, Path(image_root), names, size, workers=workers, progress=progress)
    return ImageCache(path, rows, ok, size)


def _ok_path(path: Path) -> Path:
    """The file of the cache's ``ok`` flags."""
    return path.with_name(f"{path.stem}.ok.npy")


def _finished_cache(path: Path, rows: pd.DataFrame, size: int) -> ImageCache | None:
    """The finished cache at ``path``, or None when it is not (yet) there."""
    if path.is_file() and _ok_path(path).is_file():
        log.info("reusing decoded cache %s", path.name)
        return ImageCache(path, rows, np.load(_ok_path(path)), size)
    return None


def _open_partial(path: Path, n: int, size: int) -> tuple[Path, np.ndarray]:
    """A new memory-mapped ``(n, size, size, 3)`` uint8 file beside ``path``, its space
    reserved; a full disk raises an ``OSError`` that says what to do."""
    remove_stale_temporaries(path, ".partial")  # left by a killed build
    partial = unique_sibling(path, ".partial")
    try:
        array = np.lib.format.open_memmap(
            partial, mode="w+", dtype=np.uint8, shape=(n, size, size, 3)
        )
        if hasattr(os, "posix_fallocate"):  # reserve the space now: a full disk fails here,
            with open(partial, "r+b") as f:  # not later inside the memory map
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(partial))
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise OSError(
            err.errno,
            f"cannot write the decoded cache in {path.parent} ({err.strerror}; it needs "
            f"{n * size * size * 3 / 1e9:.2f} GB): free space there or set CATSDOGS_DATA_DIR "
            "to another disk",
        ) from err
    return partial, array


def _decode_into(
    path: Path, root: Path, names: list[str], size: int, *, workers: int | None, progress: bool
) -> np.ndarray:
    """Decode ``names`` (under ``root``) into the cache ``path``; returns ``ok``."""
    partial, array = _open_partial(path, len(names), size)
    paths = [str(root / name) for name in names]
    try:
        ok = np.ones(len(paths), dtype=bool)
        for start, (images, errors) in map_chunks(
            _decode_chunk, paths, size, workers=workers, desc=f"decoding to {size}px cache",
            progress=progress,
        ):  # fmt: skip
            array[start : start + len(images)] = images
            for offset, error in enumerate(errors):
                if error:
                    ok[start + offset] = False
                    log.warning("skipping %s: %s", names[start + offset], error)
        array.flush()
        array = None  # close the memory map before renaming the file
        with atomic_path(_ok_path(path)) as tmp, open(tmp, "wb") as f:
            np.save(f, ok)
        replace_durably(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ok


class CachedImageDataset(Dataset):
    """Items ``(uint8 HWC array, label)`` of an :class:`ImageCache` at ``indices``, after
    ``transform``; the memory map is opened lazily in each process, so workers share it."""

    def __init__(self, cache: ImageCache, indices, labels, transform=None, class_names=()) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        keep = cache.ok[indices]
        if not keep.all():
            log.warning("leaving out %d images that failed to decode", int((~keep).sum()))
        self.cache_path, self.size = cache.path, cache.size
        self.indices = indices[keep]
        self.labels = labels[keep]
        self.transform = transform
        self.class_names = list(class_names)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        if self._array is None:
            self._array = np.load(self.cache_path, mmap_mode="r")
        image = np.array(self._array[self.indices[i]])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return image, int(self.labels[i])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def images(self, n: int = 256) -> np.ndarray:
        """``n`` images (or all, if fewer) evenly spaced through the dataset, so of every
        class, as cached, ``transform`` not applied: uint8 ``(n, H, W, 3)``."""
        spaced = np.unique(np.linspace(0, len(self) - 1, min(n, len(self))).astype(np.int64))
        return np.array(np.load(self.cache_path, mmap_mode="r")[self.indices[spaced]])


class ImageFileDataset(Dataset):
    """Images decoded from files on each access; one that fails yields ``None`` (logged),
    which :func:`collate_images` drops."""

    def __init__(self, paths, labels=None, size: int = 128, transform=None) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = load_square(self.paths[i], self.size)
        except Exception as err:
            log.warning("skipping %s: %s: %s", self.paths[i], type(err).__name__, err)
            return None
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return image, int(self.labels[i]), i


def collate_images(batch: list) -> tuple[torch.Tensor, ...]:
    """A uint8 ``(N, H, W, 3)`` tensor and label (and index) tensors, ``None`` items dropped."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return (torch.empty(0, 0, 0, 3, dtype=torch.uint8), torch.empty(0, dtype=torch.long))
    images = torch.from_numpy(np.stack([item[0] for item in batch]))
    rest = [torch.tensor([item[k] for item in batch]) for k in range(1, len(batch[0]))]
    return (images, *rest)


def seed_worker(worker_id: int) -> None:
    """Seed a loader worker from ``torch.initial_seed()``: repeatable, yet new each epoch
    (hence workers are not persistent)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def crop_and_flip(
    images: torch.Tensor, size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The light pipeline's ``RandomCrop(size, size)`` and ``HorizontalFlip(p=0.5)`` for a
    whole uint8 ``(N, H, W, 3)`` batch on its device, in one gather: each image gets its own
    window, flipped (its columns read backwards) half of the time."""
    n, height, width, _ = images.shape
    device = images.device
    top = torch.randint(0, height - size + 1, (n, 1, 1), device=device, generator=generator)
    left = torch.randint(0, width - size + 1, (n, 1, 1), device=device, generator=generator)
    flip = torch.rand((n, 1, 1), device=device, generator=generator) < 0.5
    steps = torch.arange(size, device=device).view(1, 1, size)
    rows = top + steps.view(1, size, 1)  # (n, size, 1)
    cols = left + torch.where(flip, size - 1 - steps, steps)  # (n, 1, size)
    return images[torch.arange(n, device=device).view(n, 1, 1), rows, cols]


def crop_flip_size(pipeline, cache_size: int) -> int | None:
    """The crop side when ``pipeline`` is the light pipeline on ``cache_size`` squares (a
    resize to that side, which changes nothing, a random crop, a flip at p=0.5), else None."""
    steps = list(getattr(pipeline, "transforms", []))
    kinds = [type(step).__name__ for step in steps]
    if kinds != ["SmallestMaxSize", "RandomCrop", "HorizontalFlip"]:
        return None
    resize, crop, flip = steps
    square = crop.height == crop.width <= cache_size and crop.p == 1 and flip.p == 0.5
    plain = square and not crop.pad_if_needed and resize.max_size == cache_size
    return crop.height if plain else None


class DeviceCropFlip:
    """A training loader whose crop and flip run on ``device`` (:func:`crop_and_flip`): its
    workers only read the cache, so on a GPU loading keeps up with training. ``pipeline``,
    the one it stands for, is what the run records; ``set_random_seed`` seeds the draws."""

    def __init__(self, loader: DataLoader, pipeline, size: int, device: torch.device) -> None:
        self.loader, self.pipeline, self.size, self.device = loader, pipeline, size, device
        self.dataset, self.sampler = loader.dataset, loader.sampler
        self.generator = loader.generator  # the shuffling's, which reseeding seeds
        self.draws = torch.Generator(device=device)

    def set_random_seed(self, seed: int) -> None:
        self.draws.manual_seed(seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.dataset.transform is not None:  # set after the loader was made: it would
            raise ValueError(  # crop twice, and the run would record the light pipeline
                "this training loader crops and flips on the device: to train with another "
                "pipeline, make the loaders again (workflow.prepare_training(cfg, pipeline))"
            )
        for images, *rest in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield (crop_and_flip(images, self.size, self.draws), *rest)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 42,
    drop_last: bool = False,
    shard: bool = False,
    crop_on: torch.device | None = None,
) -> DataLoader | DeviceCropFlip:
    """A seeded DataLoader of uint8 batches; with ``shard`` under ``torchrun``, of this
    process's share (``batch_size`` per process). With ``crop_on``, a light pipeline's crop
    and flip run on that device (:class:`DeviceCropFlip`); other pipelines stay in the workers."""
    pipeline = getattr(dataset, "transform", None)
    on_device = crop_on is not None and hasattr(dataset, "size")
    size = crop_flip_size(pipeline, dataset.size) if on_device else None
    if size is not None:
        dataset = copy.copy(dataset)
        dataset.transform = None  # the workers hand over the cached squares as they are
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = distributed.sampler_for(dataset, shuffle=shuffle) if shard else None
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_images,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )
    return loader if size is None else DeviceCropFlip(loader, pipeline, size, crop_on)


def split_datasets(
    cache: ImageCache,
    split: pd.DataFrame,
    class_names: list[str],
    transforms: dict,
) -> dict[str, CachedImageDataset]:
    """One dataset per split name in ``transforms`` (e.g. ``{"train": ..., "val": ...}``)."""
    position = pd.Series(range(len(cache.rows)), index=cache.rows["path"])
    label_index = {name: i for i, name in enumerate(class_names)}
    out = {}
    for name, transform in transforms.items():
        part = split[split["split"] == name]
        out[name] = CachedImageDataset(
            cache,
            position.loc[part["path"]].to_numpy(),
            part["label"].map(label_index).to_numpy(),
            transform,
            class_names,
        )
    return out
