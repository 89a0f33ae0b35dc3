"""Resume state of a training: the checkpoint directory's layout, what a checkpoint must match, and its clean-up.

A killed training leaves resume.json (the config fingerprint and MLflow run), history.json and
Keras' BackupAndRestore files in its checkpoint directory; the next training of the same config
and data continues from the epoch they reached, and a finished one removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from longtail.atomic_file import atomic_path, write_text
from longtail.config import ExperimentConfig, config_to_dict, flatten
from longtail.errors import ConfigError, StorageError
from longtail.file_bounds import RECORD_MAX_BYTES, read_bounded
from longtail.model_dir import BACKUP_SUBDIR, HISTORY_FILE, KERAS_BACKUP_FILES, RESUME_FILE
from longtail.output_lock import output_lock
from longtail.splits import SplitInfo

log = logging.getLogger(__name__)
# Keras' BackupAndRestore files: the weights of the last saved epoch, and that epoch's number.
_WEIGHTS, _METADATA = KERAS_BACKUP_FILES[:2]


def config_fingerprint(config: ExperimentConfig, train: SplitInfo, val: SplitInfo) -> str:
    """What a checkpoint must match to be resumed: the resolved config and both splits."""
    text = json.dumps([config_to_dict(config), train.source_fingerprint, train.n, val.n], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_resume(checkpoint_dir: Path, fingerprint: str, config: ExperimentConfig | None = None,
                 fresh: bool = False) -> dict[str, Any]:
    """The resume state to continue from, or {} to start afresh.

    State without a finished epoch (a run that failed while starting) resumes nothing, so it is
    discarded whatever config wrote it. State with epochs from another config or data is kept, and
    the error says how to go on: the original config resumes it, `fresh` discards it.
    """
    path = checkpoint_dir / RESUME_FILE
    if not path.is_file():
        foreign = [p.relative_to(checkpoint_dir).as_posix() for p in _checkpoint_files(checkpoint_dir) if p.exists()]
        if foreign:  # training would overwrite, then delete, files it has no record of writing
            raise StorageError(
                f"checkpoint directory {checkpoint_dir} holds {', '.join(foreign)} but no {RESUME_FILE}: "
                "longtail did not write them; pass an empty or new --checkpoint-dir"
            )
        return {}
    try:
        state = json.loads(read_bounded(path, str(path), RECORD_MAX_BYTES, StorageError) or b"{}")
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        state = {}
    if state.get("fingerprint") == fingerprint and not fresh:
        check_backup(checkpoint_dir)
        return state
    epochs = epochs_done(checkpoint_dir)
    if fresh or epochs == 0:
        log.info("discarding the resume state in %s (%s)", checkpoint_dir,
                 "--fresh" if fresh else "no finished epoch to resume")
        remove_checkpoints(checkpoint_dir)
        return {}
    changed = _changed_fields(state.get("config") or {}, config)
    what = f"config ({changed})" if changed else "config or data"
    raise ConfigError(
        f"checkpoint directory {checkpoint_dir} holds {epochs} finished epochs of a training with another {what}; "
        "to resume it, run again with that config and those splits; to start afresh, pass --fresh "
        "(or another --checkpoint-dir)"
    )


def check_backup(checkpoint_dir: Path) -> None:
    """Make sure Keras' latest checkpoint reads whole before training resumes from it.

    A checkpoint cut short (a kill, or a full disk, while Keras wrote it in place) is replaced by the
    previous epoch's (the `.bkp` pair training.callbacks.CheckpointBackup keeps), when that one reads whole.

    Raises:
        StorageError: neither reads whole; naming the file and `--fresh`.
    """
    backup = checkpoint_dir / BACKUP_SUBDIR
    latest = [backup / _WEIGHTS, backup / _METADATA]
    if not any(p.exists() for p in latest):
        return  # no epoch saved: nothing to restore
    problem = _unreadable(*latest)
    if not problem:
        return
    previous = [p.with_name(p.name + ".bkp") for p in latest]
    if previous[0].exists() and not _unreadable(*previous):
        log.warning("checkpoint %s does not read whole (%s): resuming from the epoch before it", latest[0], problem)
        for source, target in zip(previous, latest, strict=True):
            with atomic_path(target, what="checkpoint") as tmp:
                shutil.copyfile(source, tmp)
        return
    raise StorageError(
        f"checkpoint {latest[0]} does not read whole ({problem}), nor does an earlier one: it was cut short "
        "(a kill or a full disk while it was saved); pass --fresh to start afresh, or another --checkpoint-dir"
    )


def _unreadable(weights: Path, metadata: Path) -> str:
    """Why a checkpoint (Keras' weights file and its epoch record) does not read whole, or "" if it does."""
    try:
        record = read_bounded(metadata, metadata.name, RECORD_MAX_BYTES, StorageError)
        epoch = json.loads(record).get("epoch") if record is not None else None
    except (StorageError, ValueError, AttributeError) as e:
        return f"{metadata.name}: {e}"
    if not isinstance(epoch, int):
        return f"{metadata.name} is missing or holds no epoch"
    import h5py

    def read(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(weights, "r") as f:
            f.visititems(read)  # every variable's bytes, so a file cut short anywhere is found
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        return f"{weights.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return ""


def epochs_done(checkpoint_dir: Path) -> int:
    """Finished epochs saved in a checkpoint directory (0 when Keras saved no state to restore)."""
    backup = checkpoint_dir / BACKUP_SUBDIR
    if not backup.is_dir() or not any(backup.iterdir()):
        return 0
    path = checkpoint_dir / HISTORY_FILE
    try:
        history = json.loads(read_bounded(path, str(path), RECORD_MAX_BYTES, StorageError) or b"")
    except (StorageError, ValueError):
        return 1
    return max([len(v) for v in history.values()] or [1])


def _flat_config(config: ExperimentConfig) -> dict[str, str]:
    """Every config field as 'section.field' -> str(value): what resume.json keeps to name a change."""
    return {k: str(v) for k, v in flatten(config_to_dict(config)).items()}


def _changed_fields(saved: dict[str, Any], config: ExperimentConfig | None, limit: int = 3) -> str:
    """'train.epochs 3 -> 5, ...': the flat config fields that differ from the saved ones."""
    if config is None or not saved:
        return ""
    now = _flat_config(config)
    keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    shown = ", ".join(f"{k} {saved.get(k, '-')} -> {now.get(k, '-')}" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")



def write_resume(checkpoint_dir: Path, fingerprint: str, run_id: str | None, config: ExperimentConfig) -> None:
    """Record what the checkpoints in `checkpoint_dir` belong to (resume.json), before the first epoch."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_text(checkpoint_dir / RESUME_FILE, json.dumps(
        {"fingerprint": fingerprint, "run_id": run_id, "config": _flat_config(config)}))


def history_path(checkpoint_dir: Path) -> Path:
    """Where the per-epoch history lives while training runs (it survives a restart)."""
    return checkpoint_dir / HISTORY_FILE


def backup_path(checkpoint_dir: Path) -> Path:
    """The folder Keras' BackupAndRestore keeps its state in."""
    return checkpoint_dir / BACKUP_SUBDIR


def _checkpoint_files(checkpoint_dir: Path) -> list[Path]:
    """The checkpoint layout training owns: resume.json, history.json and Keras' backup files."""
    backup = checkpoint_dir / BACKUP_SUBDIR
    return [checkpoint_dir / RESUME_FILE, checkpoint_dir / HISTORY_FILE, *(backup / n for n in KERAS_BACKUP_FILES)]


def remove_checkpoints(checkpoint_dir: Path) -> None:
    """Drop the resume state of a finished training: the files of its layout, and its folders once empty."""
    for path in _checkpoint_files(checkpoint_dir):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (checkpoint_dir / BACKUP_SUBDIR).rmdir()


@contextlib.contextmanager
def locked_checkpoints(checkpoint_dir: Path) -> Iterator[None]:
    """Hold the checkpoint directory's lock; afterwards remove the folder if training left it empty."""
    try:
        with output_lock(checkpoint_dir, "checkpoint directory"):
            yield
    finally:
        with contextlib.suppress(OSError):
            checkpoint_dir.rmdir()


def checkpoint_dir_for(root: str, key: str) -> Path | None:
    """`root/key` when a checkpoint root is given (a volume that outlives the pod), else None (the default).

    On a cluster the root is a mounted PersistentVolumeClaim and the key the pipeline run's id, so a
    retried train task finds the state its killed predecessor left and resumes from that epoch.
    """
    if not root:
        return None
    if not key or "/" in key or key in (".", ".."):
        raise ConfigError(f"checkpoint key must be a plain name (the pipeline run id), got {key!r}")
    return Path(root) / key
