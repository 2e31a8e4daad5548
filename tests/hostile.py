"""Factories of hostile input: archive bombs of several shapes, lying and unsupported members, nested
and traversal archives, pixel bombs, disguised files, and photos carrying every kind of metadata.
Everything is drawn here, in memory; nothing is checked in."""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

from PIL import Image, ImageCms

from atelier.catalogue.synthetic import draw_garment, encode

GPS_TEXT = b"GPSLatitude-52.2297"
SERIAL = "BODY-SERIAL-4242"
OWNER_COMMENT = b"owner: Jane Doe, private"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="52,13.78N" '
    b'exif:BodySerialNumber="BODY-SERIAL-4242"/></rdf:RDF></x:xmpmeta>'
)
# byte strings none of which may survive in a stored photo
LEAKS = [
    SERIAL.encode(),
    OWNER_COMMENT,
    b"ACME Camera",
    b"ns.adobe.com",
    b"Photoshop 3.0",
    b"Exif\x00\x00",
    b"52,13.78N",
    b"tEXt",
    b"zTXt",
    b"iTXt",
    b"eXIf",
    b"iCCP",
]


def garment(seed: int = 0, size: int = 96) -> Image.Image:
    return draw_garment("dress", random.Random(seed)).resize((size, size))


def _exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "ACME Camera"  # Make
    exif[0xA431] = SERIAL  # BodySerialNumber
    exif[0x8825] = {1: "N", 2: (52.0, 13.0, 47.0), 3: "E", 4: (21.0, 0.0, 0.0)}  # GPSInfo
    return exif


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg_with_every_metadata(seed: int = 0) -> bytes:
    """A 60x30 photo (left half blue) with orientation 6, EXIF GPS/make/serial, XMP, IPTC, a comment
    and an ICC profile."""
    img = Image.new("RGB", (60, 30), (200, 10, 10))
    img.paste((10, 10, 200), (0, 0, 30, 30))
    out = io.BytesIO()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img.save(out, "JPEG", exif=_exif(6), quality=95, icc_profile=icc, comment=OWNER_COMMENT)
    data = out.getvalue()
    xmp = _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP)
    iptc_record = b"\x1c\x02\x50" + struct.pack(">H", len(SERIAL)) + SERIAL.encode()  # By-line
    iptc = _segment(
        0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc_record)) + iptc_record
    )
    return data[:2] + xmp + iptc + data[2:]


def png_with_every_metadata(seed: int = 0) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", OWNER_COMMENT.decode())
    info.add_text("Author", "Jane Doe", zip=True)  # zTXt
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    out = io.BytesIO()
    garment(seed, 64).save(out, "PNG", pnginfo=info, exif=_exif(1))
    return out.getvalue()


def webp_with_every_metadata(seed: int = 0) -> bytes:
    out = io.BytesIO()
    garment(seed, 64).save(out, "WEBP", exif=_exif(1), xmp=XMP, quality=90)
    return out.getvalue()


def jpeg_trailing_payload(seed: int = 0) -> bytes:
    """A bare JPEG with bytes after its end marker (a polyglot hiding data)."""
    return encode(garment(seed)) + b"PK\x03\x04 hidden payload " + OWNER_COMMENT


def pixel_bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A PNG whose header claims billions of pixels, in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


def gif_named_jpeg() -> bytes:
    out = io.BytesIO()
    garment(1).save(out, "GIF")
    return out.getvalue()


def _zip(members: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, method in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


def photo(seed: int = 0) -> bytes:
    return encode(garment(seed))


def ratio_bomb(inflated: int = 20 * 1024 * 1024) -> bytes:
    """One member of zeros under the per-file cap: ~20 KB on the wire, 20 MB inflated (ratio ~1000)."""
    return _zip(
        [
            ("dress/ok.jpg", photo(1), zipfile.ZIP_DEFLATED),
            ("dress/bomb.jpg", bytes(inflated), zipfile.ZIP_DEFLATED),
        ]
    )


def many_members_bomb(count: int, size: int) -> bytes:
    """Many incompressible members: every one is fine alone, the total is not."""
    rng = random.Random(7)
    return _zip([(f"dress/{i}.jpg", rng.randbytes(size), zipfile.ZIP_STORED) for i in range(count)])


def lying_member_zip() -> bytes:
    """A member whose central directory claims 100 bytes for a file of 150 KB (a size-lying bomb), beside
    a good photo."""
    data = bytearray(
        _zip(
            [
                ("dress/ok.jpg", photo(2), zipfile.ZIP_DEFLATED),
                ("dress/liar.jpg", bytes(150_000), zipfile.ZIP_DEFLATED),
            ]
        )
    )
    pos = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)  # second central directory entry
    struct.pack_into("<I", data, pos + 24, 100)  # uncompressed size
    return bytes(data)


def overlapping_bomb(copies: int = 200) -> bytes:
    """Fifield's overlap shape: many central directory entries that all point at one deflated kernel."""
    kernel_raw = bytes(2 * 1024 * 1024)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = comp.compress(kernel_raw) + comp.flush()
    crc = zlib.crc32(kernel_raw)
    name = b"dress/k.jpg"
    local = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(kernel), len(kernel_raw), len(name), 0
    )
    body = local + name + kernel
    central = b""
    for i in range(copies):
        n = f"dress/k{i}.jpg".encode()
        central += (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                0,
                crc,
                len(kernel),
                len(kernel_raw),
                len(n),
                0,
                0,
                0,
                0,
                0,
                0,
            )
            + n
        )
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, copies, copies, len(central), len(body), 0)
    return body + central + end


def unsupported_methods_zip() -> bytes:
    return _zip(
        [
            ("dress/ok.jpg", photo(3), zipfile.ZIP_DEFLATED),
            ("dress/b.jpg", photo(4), zipfile.ZIP_BZIP2),
            ("dress/l.jpg", photo(5), zipfile.ZIP_LZMA),
        ]
    )


def nested_zip() -> bytes:
    inner = _zip([("dress/x.jpg", photo(6), zipfile.ZIP_STORED)])
    return _zip(
        [("dress/inner.zip", inner, zipfile.ZIP_STORED), ("dress/inner.jpg", inner, zipfile.ZIP_STORED)]
    )


def traversal_zip() -> bytes:
    return _zip(
        [
            ("dress/ok.jpg", photo(7), zipfile.ZIP_STORED),
            ("../../etc/cron.d/x.jpg", photo(8), zipfile.ZIP_STORED),
        ]
    )


def encrypted_member_zip() -> bytes:
    data = bytearray(_zip([("dress/enc.jpg", photo(9), zipfile.ZIP_STORED)]))
    pos = data.index(b"PK\x01\x02")
    struct.pack_into("<H", data, pos + 8, 1)  # general purpose flag: encrypted
    return bytes(data)
