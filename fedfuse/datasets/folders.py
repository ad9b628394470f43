"""User datasets: a folder of images (class subfolders, or flat with a labels/attributes file
such as CelebA's ``list_attr_celeba.txt``) and a Hugging Face dataset saved with ``save_to_disk``.

Every image is converted to the configured channels, resized (shorter side) and centre-cropped
to ``size``; decoded arrays are cached on disk, keyed by the files' names, sizes and times.
Problems are reported, never skipped silently: a bad path or an empty folder is an error; an
unreadable image is an error unless ``skip_unreadable`` is set, which turns it into a counted
warning kept with the dataset (and the cell's results).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedfuse.datasets import DatasetError, ImageData, held_out_split, to_unit_range
from fedfuse.datasets.builtin import SPLIT_SEED
from fedfuse.files import write_atomic

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
CELEBA_ATTRS = "list_attr_celeba.txt"


@dataclass
class Table:
    """Files with a label each and optional per-file integer attributes."""

    files: list[Path]
    labels: np.ndarray
    class_names: tuple[str, ...]
    attributes: dict[str, np.ndarray]


def cache_dir() -> Path:
    return Path(os.environ.get("FEDFUSE_CACHE", Path.home() / ".cache" / "fedfuse")) / "datasets"


def load_image_folder(path: str, size: int = 32, channels: int = 3, labels_file: str = "", label: str = "",
                      eval_fraction: float = 0.1, limit: int = 0, skip_unreadable: bool = False) -> ImageData:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder '{root}' does not exist or is not a directory")
    check_geometry(size, channels)
    table = read_table(root, labels_file, label)
    if limit:
        table = Table(table.files[:limit], table.labels[:limit], table.class_names,
                      {k: v[:limit] for k, v in table.attributes.items()})
    images, keep, warnings = decode_cached(table.files, size, channels, skip_unreadable)
    table = Table([table.files[i] for i in keep], table.labels[keep], table.class_names,
                  {k: v[keep] for k, v in table.attributes.items()})
    return assemble(images, table, eval_fraction, warnings)


MAX_SIDE = 4096  # px: larger is a typo here (and would not fit in memory at any useful count)


def check_geometry(size, channels) -> None:
    """``size`` is a side in pixels; ``channels`` 1 (grey) or 3 (RGB): nothing else decodes."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIDE:
        raise DatasetError(f"size must be a whole number of pixels from 1 to {MAX_SIDE}, got {size!r}")
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def read_table(root: Path, labels_file: str, label: str) -> Table:
    if labels_file:
        return read_labels_file(root, root / labels_file, label)
    for name in (CELEBA_ATTRS, "labels.csv"):
        for candidate in (root / name, root.parent / name):
            if candidate.is_file():
                return read_labels_file(root, candidate, label)
    return read_class_folders(root)


def read_class_folders(root: Path) -> Table:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DatasetError(f"'{root}' has no class subfolders and no labels file "
                           f"({CELEBA_ATTRS} or labels.csv); expected root/<class>/*.png or a labels file")
    files, labels = [], []
    for index, name in enumerate(classes):
        members = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += members
        labels += [index] * len(members)
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders of '{root}'")
    return Table(files, np.array(labels, dtype=np.int64), tuple(classes), {})


def read_labels_file(root: Path, path: Path, label: str) -> Table:
    if not path.is_file():
        raise DatasetError(f"labels file '{path}' not found")
    names, rows = read_celeba_attrs(path) if path.name == CELEBA_ATTRS else read_csv(path)
    image_dir = root / "img_align_celeba" if (root / "img_align_celeba").is_dir() else root
    files = [image_dir / row[0] for row in rows]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} file(s) listed in '{path}' are missing, e.g. '{missing[0]}'")
    short = next((row for row in rows if len(row) != len(names) + 1), None)
    if short is not None:
        raise DatasetError(f"'{path}': the row of '{short[0]}' has {len(short) - 1} value(s) for its "
                           f"{len(names)} column(s)")
    columns = {n: [row[i + 1] for row in rows] for i, n in enumerate(names)}
    return label_table(files, columns, label, path)


def label_table(files: list[Path], columns: dict[str, list[str]], label: str, path: Path) -> Table:
    if label and label not in columns:
        raise DatasetError(f"label column '{label}' is not in '{path}'; columns: {', '.join(columns)}")
    label = label or ("label" if "label" in columns else "")
    values = columns.get(label, ["0"] * len(files))
    class_names = tuple(sorted(set(values), key=_natural))
    labels = np.array([class_names.index(v) for v in values], dtype=np.int64)
    attributes = {}
    for name, col in columns.items():
        try:
            attributes[name] = np.array([int(float(v)) for v in col], dtype=np.int64)
        except ValueError:
            continue  # a text column is not an attribute
    return Table(files, labels, class_names, attributes)


def _natural(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def read_celeba_attrs(path: Path) -> tuple[list[str], list[list[str]]]:
    """CelebA: a count line, a line of attribute names, then 'file v1 v2 ...' with -1/1 values
    (mapped to 0/1)."""
    lines = path.read_text().splitlines()
    if len(lines) < 3 or not lines[0].strip().isdigit():
        raise DatasetError(f"'{path}' is not in CelebA's attribute format (count, names, rows)")
    names = lines[1].split()
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    bad = next((r for r in rows if len(r) != len(names) + 1), None)
    if bad:
        raise DatasetError(f"'{path}': row '{bad[0]}' has {len(bad) - 1} values for {len(names)} attributes")
    return names, [[r[0]] + ["1" if v == "1" else "0" for v in r[1:]] for r in rows]


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV whose first column is the file name (relative to the folder), with a header."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if len(rows) < 2:
        raise DatasetError(f"'{path}' has no rows below its header")
    return [h.strip() for h in rows[0][1:]], [[c.strip() for c in r] for r in rows[1:]]


def decode_cached(files: list[Path], size: int, channels: int, skip_unreadable: bool):
    key = hashlib.sha256(repr([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
                              + [size, channels, skip_unreadable]).encode()).hexdigest()[:20]
    cached = cache_dir() / f"{key}.npz"
    if cached.is_file():
        z = np.load(cached)
        return z["images"], z["keep"], tuple(z["warnings"].tolist())
    images, keep, warnings = decode(files, size, channels, skip_unreadable)
    cached.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would add ".npz" to a name
            np.savez(f, images=images, keep=keep, warnings=np.array(warnings, dtype=str))

    write_atomic(cached, save)
    return images, keep, warnings


def decode(files: list[Path], size: int, channels: int, skip_unreadable: bool):
    from PIL import Image, UnidentifiedImageError

    out, keep, bad, resized = [], [], [], 0
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                resized += img.size != (size, size)
                out.append(fit(img.convert("L" if channels == 1 else "RGB"), size))
                keep.append(i)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            bad.append(f"{path.name}: {err}")
    if bad and not skip_unreadable:
        raise DatasetError(f"{len(bad)} unreadable image(s), e.g. {bad[0]}; fix or remove them, "
                           "or set skip_unreadable = true to leave them out (counted)")
    if not out:
        raise DatasetError("no readable images")
    warnings = ([f"{len(bad)} unreadable image(s) left out"] if bad else []) + \
               ([f"{resized} image(s) not {size}x{size} were resized and centre-cropped"] if resized else [])
    return np.stack(out), np.array(keep, dtype=np.int64), tuple(warnings)


def fit(img, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop; returns uint8 (C, H, W)."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def assemble(images: np.ndarray, table: Table, eval_fraction: float, warnings: tuple) -> ImageData:
    if not 0 < eval_fraction < 1:
        raise DatasetError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")
    train, held = held_out_split(table.labels, eval_fraction, SPLIT_SEED)
    if len(train) == 0 or len(held) == 0:
        raise DatasetError(f"{len(table.labels)} image(s) are too few for a training and a held-out split")
    tensor, labels = to_unit_range(images), torch.from_numpy(table.labels)
    return ImageData(tensor[train], labels[train], tensor[held], labels[held], table.class_names,
                     {k: v[train] for k, v in table.attributes.items()}, warnings=warnings)


def image_of(value, column: str, row: int):
    """A PIL image from an image column's value; anything else (a string, None) is the data's fault."""
    if not hasattr(value, "convert"):
        raise DatasetError(f"column '{column}' row {row} holds {type(value).__name__} {str(value)[:40]!r}, not an "
                           "image; give the column of images as image_column")
    return value


def load_hf_disk(path: str, size: int = 32, channels: int = 3, image_column: str = "image",
                 label_column: str = "label", eval_fraction: float = 0.1) -> ImageData:
    """A ``datasets.Dataset`` (or a DatasetDict with 'train' and 'test') from ``save_to_disk``."""
    import datasets

    if not Path(path).expanduser().is_dir():
        raise DatasetError(f"'{path}' is not a directory saved with datasets' save_to_disk")
    check_geometry(size, channels)
    try:
        ds = datasets.load_from_disk(str(Path(path).expanduser()))
    except (FileNotFoundError, ValueError, TypeError, KeyError) as err:  # a damaged dataset_info.json, ...
        raise DatasetError(f"'{path}' is not a dataset saved with save_to_disk: {type(err).__name__}: {err}") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = datasets.concatenate_datasets([ds[k] for k in ds])
    for column in (image_column, label_column):
        if column not in ds.column_names:
            raise DatasetError(f"'{path}' has no column '{column}'; columns: {', '.join(ds.column_names)}")
    images = np.stack([fit(image_of(img, image_column, i).convert("L" if channels == 1 else "RGB"), size)
                       for i, img in enumerate(ds[image_column])])
    values = [str(v) for v in ds[label_column]]
    names = ds.features[label_column].names if hasattr(ds.features[label_column], "names") else None
    table = label_table([Path(str(i)) for i in range(len(values))], {"label": values}, "label", Path(path))
    if names:
        table.class_names = tuple(names[int(c)] for c in table.class_names)
    return assemble(images, table, eval_fraction, ())
