"""Does an image file carry anything but pixels? A whitelist walk over JPEG segments, PNG chunks and
WebP RIFF chunks: a file made only of structural parts, with nothing after its end marker, is bare and
can be stored byte for byte. Anything else (EXIF, XMP, IPTC/Photoshop, comments, text chunks, ICC
profiles, maker data, bytes after the end) is re-encoded by catalogue.photos. Unknown means not bare."""

from __future__ import annotations

import struct

# JPEG: SOFn, DHT, SOS, DQT, DRI, DAC, DNL, APP0 (JFIF) and APP14 (Adobe: colour transform, no text)
_JPEG_OK = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_OK |= {0xC4, 0xDA, 0xDB, 0xDD, 0xCC, 0xDC, 0xE0, 0xEE}
_PNG_OK = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs", b"bKGD"}
_WEBP_OK = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF"}


def is_bare(data: bytes, fmt: str) -> bool:
    try:
        return {"JPEG": _jpeg_bare, "PNG": _png_bare, "WEBP": _webp_bare}[fmt](data)
    except (KeyError, IndexError, struct.error):
        return False


def _jpeg_bare(data: bytes) -> bool:
    if data[:2] != b"\xff\xd8":
        return False
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker not in _JPEG_OK:
            return False
        if marker == 0xE0 and not data[i + 4 : i + 9].startswith(b"JFIF\x00"):
            return False  # APP0 that is not JFIF (JFXX thumbnails, vendor data)
        if marker == 0xDA:  # SOS: entropy-coded data up to the next marker that is not RST or a stuffed 0
            j = i + 2 + length
            while True:
                j = data.index(b"\xff", j)
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    j += 1 if nxt == 0xFF else 2
                    continue
                break
            if nxt == 0xD9:  # EOI: nothing may follow
                return j + 2 == len(data)
            i = j
            continue
        i += 2 + length
    return False


def _png_bare(data: bytes) -> bool:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    i = 8
    while i + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[i : i + 8])
        if ctype not in _PNG_OK:
            return False
        i += 12 + length
        if ctype == b"IEND":
            return i == len(data)
    return False


def _webp_bare(data: bytes) -> bool:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    (riff_size,) = struct.unpack("<I", data[4:8])
    if riff_size + 8 != len(data):
        return False
    i = 12
    while i + 8 <= len(data):
        ctype, length = struct.unpack("<4sI", data[i : i + 8])
        if ctype not in _WEBP_OK:
            return False
        if ctype == b"VP8X" and data[i + 8] & 0b00101100:  # ICC, EXIF or XMP flags set
            return False
        i += 8 + length + (length & 1)
    return i == len(data)
