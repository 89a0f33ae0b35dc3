"""Real demo data in the layout a competition ships: long-tailed class folders, a balanced unlabelled test set."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from longtail.atomic_file import atomic_path
from longtail.data_folder import TEST_LABELS_FILE
from longtail.errors import DataError
from longtail.file_bounds import read_bounded
from longtail.output_paths import RECORD_FILE, first_unrecorded, record_tree, recorded
from longtail.storage import NETWORK_DEADLINE_S

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# SHA-256 of each file's *decompressed* bytes: the same for upstream's .gz and Debian's
# recompressed copies (whose .gz bytes differ), so one table checks every source.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# Fashion-MNIST's classes as folder names: lower case, '/' and ' ' made filesystem-safe.
FASHION_MNIST_CLASSES = [
    "t-shirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
]
DIGITS_CLASSES = [str(d) for d in range(10)]
# OUT's summary: the name, seed, imbalance and class counts (output_paths.RECORD_FILE, written after
# it, is what proves OUT is longtail's).
SUMMARY_FILE = "dataset.json"


def long_tail_counts(n_max: int, n_classes: int, imbalance: float) -> list[int]:
    """Exponential profile n_c = n_max * imbalance^(-c / (C - 1)), rounded: class 0 keeps n_max,
    the last keeps n_max / imbalance.

    Raises:
        DataError: imbalance < 1, or a class would keep no image.
    """
    if not imbalance >= 1.0:
        raise DataError(f"imbalance must be >= 1 (largest/smallest class), got {imbalance}")
    if n_classes == 1:
        return [n_max]
    counts = [int(round(n_max * imbalance ** (-c / (n_classes - 1)))) for c in range(n_classes)]
    if counts[-1] < 1:
        raise DataError(f"imbalance {imbalance} leaves the smallest class empty (at most {n_max} per class)")
    return counts


def load_fashion_mnist(
    source_dir: str | Path | None = None,
    *,
    base_url: str = FASHION_MNIST_URL,
    cache_dir: str | Path | None = None,
    debian_dir: str | Path = DEBIAN_FASHION_MNIST,
) -> dict[str, np.ndarray]:
    """Fashion-MNIST as arrays {train_images (60000, 28, 28), train_labels, test_images, test_labels}.

    Looks, in order, in `source_dir` (only there, when given: the caller passes $LONGTAIL_DATA),
    the Debian package's folder, then the cache, then downloads into the cache. Every file's
    decompressed SHA-256 is checked whatever its source.

    Raises:
        DataError: a file is corrupt, or no source is reachable (the message lists all three).
    """
    if source_dir is not None:
        return {k: _read_idx(_find_file(Path(source_dir), name), name) for k, name in _ARRAY_NAMES.items()}
    folders = [Path(debian_dir)]
    cache = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "longtail" / "fashion-mnist"
    folders.append(cache)
    for folder in folders:
        if all(_find_file(folder, name, required=False) for name in FASHION_MNIST_FILES):
            return {k: _read_idx(_find_file(folder, name), name) for k, name in _ARRAY_NAMES.items()}
    _download(base_url, cache, debian_dir)
    return {k: _read_idx(_find_file(cache, name), name) for k, name in _ARRAY_NAMES.items()}


_ARRAY_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_file(folder: Path, name: str, *, required: bool = True) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    if required:
        raise DataError(f"Fashion-MNIST file {name}.gz not found in {folder} (set LONGTAIL_DATA to the folder holding it)")
    return None


def _read_idx(path: Path | None, name: str) -> np.ndarray:
    """Parse an IDX file (gzipped or not) after checking its SHA-256."""
    assert path is not None
    raw = read_bounded(path, f"Fashion-MNIST file {path}", DOWNLOAD_MAX_BYTES, DataError)
    if raw is None:
        raise DataError(f"Fashion-MNIST file {path} disappeared while it was read; run again")
    return _parse_idx(raw, name, str(path), gzipped=path.suffix == ".gz")


def _parse_idx(raw: bytes, name: str, path: str, *, gzipped: bool) -> np.ndarray:
    """The array in IDX bytes `raw` (Fashion-MNIST file `name`, read from `path`), after checking its SHA-256."""
    try:
        # Unpacked at most DOWNLOAD_MAX_BYTES (+1 to see more): a gzip bomb of a few KB costs no more.
        data = gzip.GzipFile(fileobj=io.BytesIO(raw)).read(DOWNLOAD_MAX_BYTES + 1) if gzipped else raw
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a valid gzip file ({e}); delete it and run again") from None
    if len(data) > DOWNLOAD_MAX_BYTES:
        raise DataError(f"{path} unpacks to more than {DOWNLOAD_MAX_BYTES // 2**20} MiB, which no Fashion-MNIST "
                        "file does; delete it and run again")
    digest = hashlib.sha256(data).hexdigest()
    if digest != FASHION_MNIST_FILES[name]:
        raise DataError(
            f"{path} fails its checksum (SHA-256 of the content {digest[:16]}..., expected "
            f"{FASHION_MNIST_FILES[name][:16]}...); the file is corrupt or not Fashion-MNIST: delete it and run again"
        )
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# The largest Fashion-MNIST file is 26 MB (47 MB unpacked): a server sending more, or a file in the
# cache holding or unpacking to more, is not Fashion-MNIST.
DOWNLOAD_MAX_BYTES = 64 * 2**20


def _fetch(url: str, deadline_s: float = NETWORK_DEADLINE_S, max_bytes: int = DOWNLOAD_MAX_BYTES) -> bytes:
    """The body at `url`, read in 1 MiB pieces: at most `max_bytes`, and all of it within `deadline_s`.

    Raises:
        OSError: the deadline passed or the body is too big (a socket timeout is one too).
    """
    started = time.monotonic()
    pieces: list[bytes] = []
    with urllib.request.urlopen(url, timeout=min(30.0, deadline_s)) as response:
        while piece := response.read1(2**20):  # read1: returns what arrived, so the deadline is checked
            pieces.append(piece)
            if sum(map(len, pieces)) > max_bytes:
                raise OSError(f"more than {max_bytes // 2**20} MiB")
            if time.monotonic() - started > deadline_s:
                raise OSError(f"not complete after {deadline_s:.0f} s")
    return b"".join(pieces)


def _download(base_url: str, cache: Path, debian_dir: str | Path) -> None:
    """Fetch the four files into the cache, each checked before it is kept."""
    cache.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        url = base_url.rstrip("/") + f"/{name}.gz"
        try:
            payload = _fetch(url)
        except (urllib.error.URLError, OSError) as e:
            raise DataError(
                f"Fashion-MNIST not found and not downloadable ({url}: {getattr(e, 'reason', e)}). Either "
                f"install the Debian package (apt-get install dataset-fashion-mnist, files in {debian_dir}), "
                "set LONGTAIL_DATA to a folder holding the four *-ubyte.gz files, "
                "or allow network access to download them"
            ) from None
        try:
            _parse_idx(payload, name, url, gzipped=True)
        except DataError:
            raise DataError(f"download of {url} fails its checksum; try again later") from None
        with atomic_path(cache / f"{name}.gz", what="the Fashion-MNIST cache file", error=DataError) as tmp:
            tmp.write_bytes(payload)


def make_fashion_mnist_lt(
    out_dir: str | Path,
    imbalance: float = 100.0,
    seed: int = 0,
    source_dir: str | Path | None = None,
    *,
    n_max: int = 6000,
    test_per_class: int = 1000,
    base_url: str = FASHION_MNIST_URL,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Fashion-MNIST-LT: train/<class>/<id>.png long-tailed (6,000 ... 60 at imbalance 100),
    test/<id>.png balanced (1,000 per class) and test_labels.csv (id,label by class name).

    Class c keeps n_max * imbalance^(-c/9) training images, picked at random (seeded) from its 6,000;
    class 0 (t-shirt_top) is the head, class 9 (ankle_boot) the tail. Images are grayscale 28x28 PNGs.

    Args:
        source_dir: folder with the IDX files ($LONGTAIL_DATA, read by the caller); None looks in the
            Debian package folder, then downloads (checksum-verified).
        n_max, test_per_class: smaller values make small copies for tests.

    Returns:
        The summary also written to OUT/dataset.json: class_names, class_counts, n_train, n_test, ...
    """
    if not 1 <= n_max <= 6000 or not 0 <= test_per_class <= 1000:
        raise DataError(f"Fashion-MNIST has 6000 train and 1000 test images per class, got {n_max}, {test_per_class}")
    arrays = load_fashion_mnist(source_dir, base_url=base_url, cache_dir=cache_dir)
    return _write_long_tail(
        out_dir,
        name="fashion-mnist-lt",
        class_names=FASHION_MNIST_CLASSES,
        train=(arrays["train_images"], arrays["train_labels"]),
        test=(arrays["test_images"], arrays["test_labels"]),
        n_max=n_max,
        test_per_class=test_per_class,
        imbalance=imbalance,
        seed=seed,
    )


def make_digits_lt(out_dir: str | Path, imbalance: float = 10.0, seed: int = 0, *, test_per_class: int = 30) -> dict[str, Any]:
    """scikit-learn's 8x8 digits as a long-tailed set of 32x32 grayscale PNGs.

    `test_per_class` images per digit are held out (balanced test/); the rest are long-tailed with
    n_max = the fewest remaining in any digit (about 150), so every class can supply its count.
    Pixels 0..16 map to 0..255 and each pixel becomes a 4x4 block (nearest neighbour): exact, and
    any later resize sees the original 8x8 content.

    Returns:
        The summary also written to OUT/dataset.json.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_NEAREST) for im in images])
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:test_per_class] for c in range(10)]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    n_max = int(min(np.sum((labels == c) & ~is_test) for c in range(10)))
    return _write_long_tail(
        out_dir,
        name="digits-lt",
        class_names=DIGITS_CLASSES,
        train=(images[~is_test], labels[~is_test]),
        test=(images[is_test], labels[is_test]),
        n_max=n_max,
        test_per_class=test_per_class,
        imbalance=imbalance,
        seed=seed,
    )


def _write_long_tail(
    out_dir: str | Path,
    *,
    name: str,
    class_names: list[str],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_max: int,
    test_per_class: int,
    imbalance: float,
    seed: int,
) -> dict[str, Any]:
    """Pick the long-tailed train subset and balanced test subset, and write them into OUT whole.

    Everything goes into a temporary sibling folder that replaces OUT at the end, so an interrupted
    run leaves no half-made dataset; an existing OUT is only replaced if everything in it is what this
    module wrote there (check_output_folder).
    """
    out = check_output_folder(out_dir)
    counts = long_tail_counts(n_max, len(class_names), imbalance)
    rng = np.random.default_rng(seed)
    train_images, train_labels = train
    test_images, test_labels = test
    picks = {c: rng.permutation(np.flatnonzero(train_labels == c))[: counts[c]] for c in range(len(class_names))}
    test_picks = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(test_labels == c))[:test_per_class] for c in range(len(class_names))])
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for c, idx in picks.items():
            folder = tmp / "train" / class_names[c]
            folder.mkdir(parents=True)
            for i in np.sort(idx):
                _write_png(folder / f"{i:05d}.png", train_images[i])
        (tmp / "test").mkdir()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id", "label"])
        for i in test_picks:
            _write_png(tmp / "test" / f"{i:05d}.png", test_images[i])
            writer.writerow([f"{i:05d}", class_names[int(test_labels[i])]])
        (tmp / TEST_LABELS_FILE).write_text(buf.getvalue())
        summary = {
            "dataset": name,
            "imbalance": float(imbalance),
            "seed": int(seed),
            "class_names": list(class_names),
            "class_counts": {class_names[c]: int(len(idx)) for c, idx in picks.items()},
            "n_train": int(sum(len(idx) for idx in picks.values())),
            "n_test": int(len(test_picks)),
        }
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        publish_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**summary, "out_dir": str(out)}


def check_output_folder(out_dir: str | Path) -> Path:
    """OUT as a Path, if it is new, empty, or a dataset folder this module made and nobody added to.

    Made by this module means: every file in it is listed, at its size, in the record publish_folder
    wrote last (output_paths.RECORD_FILE), and every folder holds one of them. A summary file alone
    proves nothing: anyone can write a dataset.json.

    Raises:
        DataError: OUT holds anything else, naming the first such file.
        OSError: OUT is not a folder.
    """
    out = Path(out_dir)
    if not out.exists() or not any(out.iterdir()):
        return out
    foreign = first_unrecorded(out)
    if foreign is not None:
        unproven = "" if recorded(out) else f" (the folder has no {RECORD_FILE}, its record)"
        raise DataError(f"{out} is not a longtail dataset folder as longtail data left it: it holds {foreign}, which "
                        f"longtail data did not write{unproven}; move it out, or choose an empty or new folder")
    return out


def publish_folder(tmp: Path, out: Path) -> None:
    """Record every file of the finished folder `tmp` (the record written last), then move it to `out`,
    replacing an old `out` only once the new one is whole."""
    record_tree(tmp)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / "d")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"cannot encode {path.name} as PNG")
    path.write_bytes(encoded.tobytes())
