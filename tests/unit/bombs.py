"""Decompression bombs in every format the decoders accept: a few KB on disk, a huge claimed size.

Each starts from a real small image written by Pillow whose header is then patched to claim
BOMB_SIDE x BOMB_SIDE pixels, so a decoder that trusts the header allocates gigabytes before it
finds the data short. BOMB_SIDE^2 (144 MP) is under Pillow's own error threshold (~179 MP): only
longtail's limit stands between these files and the allocation. `png_bomb` is a valid PNG whose
compressed zero rows really do inflate to its claimed size.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

BOMB_SIDE = 12_000


def _small(fmt: str, mode: str = "RGB", **kw) -> bytes:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 20_000) -> bytes:
    """A valid grayscale PNG of side x side zero pixels (about side^2 / 1000 bytes on disk)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one zero byte per pixel
    block = row * max(1, (1 << 20) // len(row))
    rows_per_block = len(block) // len(row)
    parts = [compressor.compress(block) for _ in range(side // rows_per_block)]
    parts.append(compressor.compress(row * (side % rows_per_block)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def png_header_bomb() -> bytes:
    data = bytearray(_small("PNG"))
    data[16:24] = struct.pack(">II", BOMB_SIDE, BOMB_SIDE)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a valid IHDR checksum
    return bytes(data)


def jpeg_bomb() -> bytes:
    data = bytearray(_small("JPEG", quality=90))
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 9] = struct.pack(">HH", BOMB_SIDE, BOMB_SIDE)
    return bytes(data)


def bmp_bomb() -> bytes:
    data = bytearray(_small("BMP"))
    data[18:26] = struct.pack("<ii", BOMB_SIDE, BOMB_SIDE)
    return bytes(data)


def gif_bomb() -> bytes:
    data = bytearray(_small("GIF", "P"))
    data[6:10] = struct.pack("<HH", BOMB_SIDE, BOMB_SIDE)  # logical screen
    at = data.index(b"\x2c", 13)  # image descriptor: left, top, width, height
    data[at + 5 : at + 9] = struct.pack("<HH", BOMB_SIDE, BOMB_SIDE)
    return bytes(data)


def webp_bomb() -> bytes:
    data = bytearray(_small("WEBP", lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = int.from_bytes(data[21:25], "little")
    bits = (bits & ~0x0FFFFFFF) | (BOMB_SIDE - 1) | ((BOMB_SIDE - 1) << 14)
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


def tiff_bomb() -> bytes:
    """An uncompressed one-strip grayscale TIFF claiming BOMB_SIDE^2 pixels with 16 bytes of data."""
    entries = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 4, 1, BOMB_SIDE), (257, 4, 1, BOMB_SIDE), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, BOMB_SIDE), (279, 4, 1, 16),
    ]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + b"\x00\x00\x00\x00" + b"\x00" * 16


# Every container the decoders accept, by file extension.
BOMBS = {
    "png": png_header_bomb, "jpg": jpeg_bomb, "bmp": bmp_bomb, "gif": gif_bomb, "webp": webp_bomb,
    "tif": tiff_bomb,
}
