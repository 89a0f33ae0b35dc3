"""Train-time augmentation of float batches: flip, shift, random erasing, mixup and cutmix.

Every draw comes from a stateless seed, so a resumed epoch draws what an uninterrupted one would. A new
augmentation is its op here, its field in `Augmentation` (and in the config's AugmentationConfig), and
the float32 batches it holds in `float_copies`, which the streamed pipeline's memory plan counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

# float32 batches alive while one batch is flipped, padded and cropped: ~6 (each parallel map added
# ~18 MB of RSS at 64 px, batch 128).
AUGMENT_FLOAT_COPIES = 6
# Random erasing adds a noise batch and the erased output per batch.
ERASE_FLOAT_COPIES = 2


@dataclass(frozen=True)
class Augmentation:
    """Random train-time augmentation: horizontal flip, shift by pad + random crop, random erasing."""

    flip: bool = True
    shift: float = 0.1
    erase: float = 0.0

    @classmethod
    def from_config(cls, cfg: Any) -> Augmentation:
        """From longtail.config.AugmentationConfig."""
        return cls(flip=bool(cfg.flip), shift=float(cfg.shift), erase=float(cfg.erase))

    @property
    def float_copies(self) -> int:
        """float32 batches alive while one batch is augmented (for stream_plan)."""
        return AUGMENT_FLOAT_COPIES + (ERASE_FLOAT_COPIES if self.erase > 0 else 0)


@dataclass(frozen=True)
class Mixing:
    """Batch mixing: mixup and/or cutmix with Beta(alpha, alpha) weights, in epochs before `until_epoch`.

    Each batch is mixed with itself reversed (row i with row B-1-i). With both alphas > 0, a
    batch uses one of the two, by a fair coin. Targets become the same convex combination of
    one-hot labels as the images are of pixels.
    """

    mixup: float = 0.0
    cutmix: float = 0.0
    until_epoch: int = 2**31 - 1

    @property
    def active(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.until_epoch > 0

    @classmethod
    def from_config(cls, cfg: Any, epochs: int) -> Mixing:
        """From longtail.config.AugmentationConfig and train.epochs."""
        return cls(mixup=float(cfg.mixup), cutmix=float(cfg.cutmix),
                   until_epoch=int(epochs) - int(cfg.mix_off_last_epochs))


def shift_crop(images: tf.Tensor, pad: int, seed: tf.Tensor) -> tf.Tensor:
    """Shift each image by up to `pad` pixels: zero-pad, then a random crop back to size (vectorised)."""
    n = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([n, 2], seed=seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(h)[None, :]
    cols = offsets[:, 1:] + tf.range(w)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


# Random erasing's box (Zhong et al. 2020): 2-40% of the image's area, aspect ratio 0.3-1/0.3.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = 0.3


def random_erase(images: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """With `probability`, replace one random box of each image by uniform noise (vectorised).

    The noise spans the batch's own value range, so it fits any scaling (/255 or mean subtraction).
    A box that would cross the border is cut at it.
    """
    n = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    u = tf.random.stateless_uniform([n, 5], seed=seed)
    lo_area, hi_area = ERASE_AREA
    area = (lo_area + u[:, 1] * (hi_area - lo_area)) * float(h * w)
    log_aspect = np.log(ERASE_ASPECT) * (1.0 - 2.0 * u[:, 2])
    aspect = tf.exp(log_aspect)
    box_h = tf.minimum(tf.sqrt(area * aspect), float(h))
    box_w = tf.minimum(tf.sqrt(area / aspect), float(w))
    top = u[:, 3] * (float(h) - box_h)
    left = u[:, 4] * (float(w) - box_w)
    rows = tf.range(h, dtype=tf.float32)[None, :]
    cols = tf.range(w, dtype=tf.float32)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    chosen = (u[:, 0] < probability)[:, None, None]
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & chosen)[..., None]
    noise = tf.random.stateless_uniform(tf.shape(images), seed=seed + tf.constant([0, 1], tf.int64),
                                        minval=tf.reduce_min(images), maxval=tf.reduce_max(images) + 1e-6)
    return tf.where(mask, noise, images)


def augment(images: tf.Tensor, aug: Augmentation, seed: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip, shift and erasing of float images, from a stateless (2,) seed."""
    if aug.flip:
        flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed=seed) < 0.5
        images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    pad = int(round(aug.shift * images.shape[1]))
    if pad > 0:
        images = shift_crop(images, pad, seed + tf.constant([0, 1], tf.int64))
    if aug.erase > 0:
        images = random_erase(images, aug.erase, seed + tf.constant([0, 2], tf.int64))
    return images


def beta_sample(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """One Beta(alpha, alpha) draw from a stateless (2,) seed (a ratio of two gamma draws)."""
    a = tf.random.stateless_gamma([], seed=seed, alpha=alpha)
    b = tf.random.stateless_gamma([], seed=seed + tf.constant([0, 1], tf.int64), alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


def mixup(images: tf.Tensor, targets: tf.Tensor, lam: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """lam * batch + (1 - lam) * reversed batch, for images and targets alike; returns lam too."""
    return (lam * images + (1.0 - lam) * tf.reverse(images, axis=[0]),
            lam * targets + (1.0 - lam) * tf.reverse(targets, axis=[0]), lam)


def cutmix(images: tf.Tensor, targets: tf.Tensor, lam: tf.Tensor,
           seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Paste a box of area ~(1 - lam) from the reversed batch into each image (Yun et al. 2019).

    The box is clipped at the border, so the targets use the kept fraction actually left,
    lam' = 1 - box area / image area, which is returned.
    """
    h, w = images.shape[1], images.shape[2]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.round(ratio * h), tf.int32)
    cut_w = tf.cast(tf.round(ratio * w), tf.int32)
    centre = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=1)
    cy = tf.cast(centre[0] * h, tf.int32)
    cx = tf.cast(centre[1] * w, tf.int32)
    y0, y1 = tf.clip_by_value(cy - cut_h // 2, 0, h), tf.clip_by_value(cy - cut_h // 2 + cut_h, 0, h)
    x0, x1 = tf.clip_by_value(cx - cut_w // 2, 0, w), tf.clip_by_value(cx - cut_w // 2 + cut_w, 0, w)
    rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
    cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
    box = tf.cast(tf.logical_and(rows[:, None], cols[None, :]), images.dtype)[None, :, :, None]
    kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / float(h * w)
    mixed = images * (1.0 - box) + tf.reverse(images, axis=[0]) * box
    return mixed, kept * targets + (1.0 - kept) * tf.reverse(targets, axis=[0]), kept


def mix_batch(images: tf.Tensor, targets: tf.Tensor, mixing: Mixing,
              seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mixup or cutmix one batch (targets one-hot/soft, float32); returns (images, targets, lam)."""
    cut_seed = seed + tf.constant([0, 3], tf.int64)
    if mixing.mixup > 0 and mixing.cutmix > 0:
        use_cutmix = tf.random.stateless_uniform([], seed=seed + tf.constant([0, 2], tf.int64)) < 0.5
        lam_mix, lam_cut = beta_sample(mixing.mixup, seed), beta_sample(mixing.cutmix, seed)
        return tf.cond(use_cutmix, lambda: cutmix(images, targets, lam_cut, cut_seed),
                       lambda: mixup(images, targets, lam_mix))
    if mixing.cutmix > 0:
        return cutmix(images, targets, beta_sample(mixing.cutmix, seed), cut_seed)
    return mixup(images, targets, beta_sample(mixing.mixup, seed))


def mix_if_on(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None, mixing: Mixing, epoch: tf.Tensor,
               seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """mix_batch in epochs before mixing.until_epoch; sample weights mixed with the same lam."""

    def mixed() -> tuple[tf.Tensor, ...]:
        mx, my, lam = mix_batch(x, y, mixing, seed)
        return (mx, my) if w is None else (mx, my, lam * w + (1.0 - lam) * tf.reverse(w, axis=[0]))

    def plain() -> tuple[tf.Tensor, ...]:
        return (x, y) if w is None else (x, y, w)

    out = tf.cond(epoch < mixing.until_epoch, mixed, plain)
    for after, before in zip(out, (x, y, w)[: len(out)], strict=True):
        after.set_shape(before.shape)
    return out[0], out[1], (out[2] if w is not None else None)
