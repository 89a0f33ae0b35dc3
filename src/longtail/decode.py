"""Image files to stored pixels: decode any common container to RGB uint8, resize, CLAHE, white balance."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from longtail.errors import DataError

# Re-exported: where the decoders' callers have always found them.
from longtail.pixel_settings import IMAGE_EXTENSIONS, RESIZE_MODES, PixelSettings, is_image_name  # noqa: F401

# One limit for every format and both decoders, checked from the header before any decoder
# allocates: 40 megapixels (a 7300x5500 photo) passes, a decompression bomb (a few KB on disk that
# claims 30000x30000) is rejected. Pillow's own, looser guard (~179 MP) stays on behind it.
MAX_IMAGE_PIXELS = 40_000_000
# The per-image memory bound: the decoder's own buffer (width x height x channels x bytes per
# sample, read from the header, at least 3) may not exceed this. One image then holds at most its
# file (MAX_FILE_BYTES, half this), the decoder's buffer, and the RGB uint8 result (no bigger than
# the buffer claim, converted in strips of STRIP_ROWS): under 2 x this, measured in test_decode.
MAX_DECODE_BYTES = 256 * 2**20
# Files over this are rejected before they are read.
MAX_FILE_BYTES = MAX_DECODE_BYTES // 2
STRIP_ROWS = 256
# PNGs decoding to more than this go to Pillow (see _png_for_opencv).
OPENCV_PNG_MAX_BYTES = MAX_DECODE_BYTES // 4
# The containers Pillow may identify a file as (whatever its extension): the ones ingest accepts.
# (A camera's multi-picture JPEG opens as JPEG too, as MPO.)
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "WEBP", "TIFF", "GIF")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# OpenCV from 4.10 decodes a JPEG straight to RGB (no BGR image, no conversion); older ones do not.
_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)


class DecodeError(DataError):
    """A file with an image extension that cannot be turned into pixels; the message is the reason."""


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's start-of-frame marker, or None if not found.

    Reads only the marker segments before the first frame, so it costs microseconds; ingest uses it
    to pick a reduced-size decode and to send CMYK files through Pillow.
    """
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 10 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return height, width, data[i + 9]
        i += 2 + length
    return None


def _reduced_scale(height: int, width: int, target: int) -> int:
    """The largest libjpeg DCT downscale k (8, 4, 2; 1 for none) whose 1/k output keeps the short side >= target.

    libjpeg decodes at 1/k by an inverse DCT of each block's low frequencies: the decoder's main
    cost shrinks with k, and the result is itself an antialiased downscale (at 1/8 each pixel is
    its block's mean). A 256 px JPEG going to 64 px decodes at 1/4, straight to the target, about
    3x faster than a full decode + area resize (docs/benchmarks.md "Ingest"). libjpeg rounds the scaled size up.

    Against a full decode + area resize the stored pixels differ by 0.6-6.1 grey levels on average
    (27.9-37.4 dB) on real photos. A 2x margin about halved that and took 1.5x the decode time;
    models trained and scored on either ingest of scaled-lt scored within 0.012 of each other
    (docs/benchmarks.md "Ingest"). tests/unit/test_decode.py holds the figures and the bound.
    """
    short = min(height, width)
    return next((k for k in (8, 4, 2) if -(-short // k) >= target), 1)


def _jpeg_flag(scale: int) -> int:
    """cv2.imdecode's flag for a colour decode at 1/scale, straight to RGB where OpenCV can (4.10 on)."""
    reduced = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
               8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[scale]
    return reduced | (_IMREAD_RGB if _IMREAD_RGB is not None else cv2.IMREAD_COLOR)


def decode(data: bytes, *, target_size: int | None = None) -> np.ndarray:
    """Decode an image file's bytes to RGB uint8 (H, W, 3), upright per its EXIF orientation.

    JPEG (grayscale, RGB, CMYK), PNG (gray, alpha, palette, 16-bit), BMP, WebP, TIFF and GIF
    (first frame). Alpha is composited over white; 16-bit samples keep their top 8 bits.
    JPEG and PNG take OpenCV's decoder (faster); everything else, and any file OpenCV
    refuses, goes through Pillow, which also gives the precise reason for a failure.

    Args:
        data: the whole file.
        target_size: when given, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as its
            short side stays >= target_size (the result is then smaller than the file's size).

    Raises:
        DecodeError: with the reason, e.g. "empty file (0 bytes)", "truncated image data".
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    header = jpeg_header(data)  # parsed once: the size check and the choice of decoder both read it
    check_size(data, None if header is None else (header[1], header[0], max(3, header[2])))
    buf = np.frombuffer(data, dtype=np.uint8)
    # A JPEG without its end-of-image marker is truncated; Pillow decides (and names the failure).
    if header is not None and header[2] in (1, 3) and _ends_with_eoi(data):
        scale = 1 if target_size is None else _reduced_scale(header[0], header[1], target_size)
        image = cv2.imdecode(buf, _jpeg_flag(scale))
        if image is not None:
            return image if _IMREAD_RGB is not None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif data.startswith(_PNG_MAGIC) and _png_for_opencv(data):
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if raw is not None:
            return _to_rgb8(raw, bgr=True)
    return _decode_pillow(data)


def image_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, decoded bytes per pixel) from a file's header alone, or None if unknown.

    JPEG, PNG, WebP, GIF and BMP headers are parsed here (a few bytes each); anything else is
    opened lazily by Pillow, which reads the header and allocates nothing. WebP is parsed here
    because Pillow's WebP opener allocates the whole canvas before its own size check.

    Raises:
        DecodeError: Pillow refuses the header as a decompression bomb.
    """
    jpeg = jpeg_header(data)
    if jpeg is not None:
        return jpeg[1], jpeg[0], max(3, jpeg[2])
    if data.startswith(_PNG_MAGIC) and len(data) >= 26 and data[12:16] == b"IHDR":
        bit_depth, color_type = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color_type, 4)
        return _u32be(data, 16), _u32be(data, 20), max(3, channels * max(1, bit_depth // 8))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        webp = _webp_size(data)
        if webp is not None:
            return webp[0], webp[1], 4
    if data[:4] in (b"GIF8",) and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little"), 4
    if data[:2] == b"BM" and len(data) >= 30 and int.from_bytes(data[14:18], "little") >= 40:
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        return abs(width), abs(height), 4
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
            img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
        with img:
            bands = len(img.getbands())
            sample = 4 if img.mode in ("I", "F") else 2 if img.mode.startswith("I;16") else 1
            return img.width, img.height, max(3, bands * sample)
    except Image.DecompressionBombError as e:
        raise DecodeError(f"image too large to decode safely: {e}") from None
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to name, below
        return None


def _ends_with_eoi(data: bytes) -> bool:
    """True if a JPEG's last bytes, past any zero padding, are its end-of-image marker (no copy of the file)."""
    end = len(data)
    while end > 2 and data[end - 1] == 0:
        end -= 1
    return data[end - 2 : end] == b"\xff\xd9"


def _png_for_opencv(data: bytes) -> bool:
    """True for a PNG OpenCV decodes as it should, in little memory: up to 8 bits per sample, under
    OPENCV_PNG_MAX_BYTES decoded, and no eXIf chunk (OpenCV ignores its orientation).

    OpenCV holds about twice the decoded size while it decodes, and a 16-bit file at full depth;
    Pillow reads 16-bit samples as 8-bit and is converted in strips (see MAX_DECODE_BYTES).
    """
    header = image_header(data)
    if header is None or len(data) < 26 or data[24] > 8:
        return False
    return header[0] * header[1] * header[2] <= OPENCV_PNG_MAX_BYTES and not _png_has_exif(data)


def _png_has_exif(data: bytes) -> bool:
    """True if a PNG has an eXIf chunk (it must come before the image data)."""
    i = len(_PNG_MAGIC)
    while i + 8 <= len(data):
        kind = data[i + 4 : i + 8]
        if kind == b"eXIf":
            return True
        if kind == b"IDAT":
            return False
        i += 12 + _u32be(data, i)
    return False


def _u32be(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "big")


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a WebP from its first chunk: VP8X canvas, VP8L or VP8 frame header."""
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def check_size(data: bytes, header: tuple[int, int, int] | None = None) -> None:
    """Refuse an image whose header claims more than MAX_IMAGE_PIXELS or MAX_DECODE_BYTES.

    Runs before any decoder allocates, so a decompression bomb costs only its header's parsing.

    Args:
        header: image_header(data) when the caller has parsed it already.

    Raises:
        DecodeError: naming the claimed size and the limit.
    """
    header = header or image_header(data)
    if header is None:
        return
    width, height, bytes_per_pixel = header
    pixels = width * height
    if pixels > MAX_IMAGE_PIXELS:
        raise DecodeError(
            f"image too large to decode safely: the header claims {width}x{height} = {pixels / 1e6:.0f} MP, "
            f"over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit"
        )
    if pixels * bytes_per_pixel > MAX_DECODE_BYTES:
        raise DecodeError(
            f"image too large to decode safely: {width}x{height} at {bytes_per_pixel} bytes per pixel needs "
            f"{pixels * bytes_per_pixel / 2**20:.0f} MiB, over the {MAX_DECODE_BYTES // 2**20} MiB per-image limit"
        )


def _decode_pillow(data: bytes) -> np.ndarray:
    """Pillow's decoder, with each failure mapped to a one-line reason."""
    try:
        img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except UnidentifiedImageError:
        raise DecodeError(f"not an image: the content is none of {', '.join(PILLOW_FORMATS)}") from None
    except Image.DecompressionBombError as e:
        raise DecodeError(f"image too large to decode safely: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DecodeError(f"corrupt or truncated {_sniff(data)} data: {_reason(e)}") from None
    fmt = img.format or "image"
    try:
        with img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DecodeError(
                    f"image too large to decode safely: {img.width}x{img.height} is over the "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP limit"
                )
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # in place: without it, a full copy when upright
            return _pil_to_rgb8(img)
    except Image.DecompressionBombError as e:
        raise DecodeError(f"image too large to decode safely: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = _reason(e)
        if "truncated" in msg or isinstance(e, EOFError):
            raise DecodeError(f"truncated {fmt} data ({msg})") from None
        raise DecodeError(f"corrupt {fmt} data: {msg}") from None


def _reason(e: BaseException) -> str:
    """A decoder's message without any bytes it quotes from the file (a reason, never content)."""
    msg = re.sub(r"""b(['"]).*?(?<!\\)\1""", "<bytes>", str(e) or type(e).__name__)
    return msg[:200]


def _sniff(data: bytes) -> str:
    """The container named by the file's magic bytes, for messages."""
    for magic, name in ((b"\xff\xd8", "JPEG"), (_PNG_MAGIC, "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
                        (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF")):
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return "image"


def _pil_to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB uint8, with 16/32-bit samples scaled (Pillow's own convert clips them)."""
    mode = img.mode
    if mode == "F":
        arr = np.clip(np.asarray(img), 0.0, 1.0 if np.asarray(img).max() <= 1.0 else 255.0)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return _to_rgb8((arr * scale).round().astype(np.uint8), bgr=False)
    if mode == "P":
        img = img.convert("RGBA")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA", "La", "RGBa", "PA", "I;16", "I;16B", "I;16L", "I;16N", "I"):
        img = img.convert("RGBA")
    # Strip by strip: np.asarray of the whole image would be one more full-size copy.
    return _rgb8_by_strips(img.height, img.width, bgr=False,
                           strip=lambda top: np.asarray(img.crop((0, top, img.width, min(img.height, top + STRIP_ROWS)))))


def _to_rgb8(arr: np.ndarray, *, bgr: bool) -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) of uint8/uint16/int32/float -> RGB uint8 (H, W, 3), alpha composited over white.

    Converted STRIP_ROWS rows at a time into one preallocated output, so the only full-size arrays
    are the decoder's buffer and the result (see MAX_DECODE_BYTES): never a full-size uint16 copy.
    """
    if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3))):
        # The common case (8-bit gray or colour) in one OpenCV call into the one output array: a
        # NumPy copy through reversed channels cost as much as decoding the PNG.
        code = cv2.COLOR_GRAY2RGB if arr.ndim == 2 or arr.shape[2] == 1 else cv2.COLOR_BGR2RGB if bgr else None
        return cv2.cvtColor(arr, code) if code is not None else np.ascontiguousarray(arr)
    return _rgb8_by_strips(arr.shape[0], arr.shape[1], bgr=bgr, strip=lambda top: arr[top : top + STRIP_ROWS])


def _rgb8_by_strips(height: int, width: int, *, bgr: bool, strip: Callable[[int], np.ndarray]) -> np.ndarray:
    """RGB uint8 (height, width, 3) filled from strip(top), the STRIP_ROWS rows from `top` on."""
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, STRIP_ROWS):
        out[top : top + STRIP_ROWS] = _strip_to_rgb8(strip(top), bgr=bgr)
    return out


def _strip_to_rgb8(arr: np.ndarray, *, bgr: bool) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # 16-bit samples, either byte order
        arr = (arr.astype(np.uint16, copy=False) >> 8).astype(np.uint8)
    elif arr.dtype == np.int32:  # Pillow's mode I: 16-bit PNG/TIFF samples as 0..65535
        arr = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    channels = arr.shape[2]
    if channels in (2, 4):
        color, alpha = arr[:, :, : channels - 1], arr[:, :, channels - 1 :]
        if alpha.min() < 255:
            a = alpha.astype(np.uint16)
            color = ((color.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
        arr = color
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if bgr:
        return arr[:, :, ::-1]
    return arr


def resize(image: np.ndarray, size: int, mode: str = "stretch") -> np.ndarray:
    """Resize RGB uint8 to (size, size, 3).

    stretch: scale each axis independently (distorts the aspect ratio).
    aspect: scale so the short side is `size`, then crop the centre square.
    Shrinking uses area averaging (no aliasing); enlarging uses bicubic.
    """
    if mode not in RESIZE_MODES:
        raise DataError(f"resize must be 'stretch' or 'aspect', got {mode!r}")
    h, w = image.shape[:2]
    if mode == "stretch":
        out_h, out_w = size, size
    else:
        scale = size / min(h, w)
        out_h, out_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (out_h, out_w) != (h, w):
        interp = cv2.INTER_AREA if out_h * out_w < h * w else cv2.INTER_CUBIC
        image = cv2.resize(image, (out_w, out_h), interpolation=interp)
    if mode == "aspect":
        top, left = (out_h - size) // 2, (out_w - size) // 2
        image = image[top : top + size, left : left + size]
    return np.ascontiguousarray(image)


def clahe(image: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of the L channel in LAB (colours kept)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    tiles = max(1, min(tiles, min(image.shape[:2]) // 4))  # tiles of at least 4x4 pixels on tiny images
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def gray_world(image: np.ndarray) -> np.ndarray:
    """Gray-world white balance: scale each channel so its mean equals the mean over all channels."""
    means = image.reshape(-1, 3).mean(axis=0)
    gains = np.where(means > 0, means.mean() / np.maximum(means, 1e-6), 1.0)
    return np.clip(image.astype(np.float32) * gains.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def to_pixels(data: bytes, settings: PixelSettings) -> np.ndarray:
    """One file's bytes to the stored (size, size, 3) uint8: decode, resize, white balance, CLAHE.

    The colour operations run after resizing: they see exactly the stored pixels, and cost the same
    for any source size. White balance comes first so CLAHE equalises corrected colours.
    """
    return as_stored(decode(data, target_size=settings.image_size), settings)


def as_stored(image: np.ndarray, settings: PixelSettings) -> np.ndarray:
    """Decoded RGB uint8 pixels of any size to what ingest stores: resize, white balance, CLAHE (to_pixels' tail).

    The served model (served_model.py) sends a caller's uint8 arrays through it, so an array and the
    same picture as a PNG become the same pixels.
    """
    image = resize(image, settings.image_size, settings.resize)
    if settings.white_balance:
        image = gray_world(image)
    if settings.clahe:
        image = clahe(image)
    return image
