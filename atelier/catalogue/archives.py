"""ZIP archives of catalogue photos, read one bounded member at a time.

    archive (a seekable file on disk) ── end record: directory size and entry count in caps
        ── central directory checks ── for each member:
        directory / hidden ── skipped
        unsafe path, too many members, declared total over the cap ── the whole archive refused
        method not STORED/DEFLATED, encrypted, nested archive, declared ratio or size over the cap,
        inflates past its declared size, bad CRC, the archive's running total over its cap
                                                              ── one rejected entry with its reason
        otherwise ── (bytes, category folder), at most ATELIER_MAX_UPLOAD_BYTES in memory

`extract_tree` applies the same checks to a ZIP that is a data set's layout (annotation text files and
photos, such as DeepFashion's) and writes the members it is asked for under a folder.

Only one member's bytes are in memory at a time and a reader never inflates more than the member's cap
plus one chunk, so a bomb costs CPU up to the caps and no memory. Every error that zipfile or zlib can
raise for a hostile member becomes a rejected entry: nothing here answers a 500.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from atelier.core.config import Settings

ALLOWED_METHODS = {zipfile.ZIP_STORED: "STORED", zipfile.ZIP_DEFLATED: "DEFLATED"}
METHOD_NAMES = {zipfile.ZIP_BZIP2: "BZIP2", zipfile.ZIP_LZMA: "LZMA", 9: "DEFLATE64"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
ARCHIVE_SUFFIXES = {".zip", ".jar", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst"}
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")
CHUNK = 256 * 1024
CORRUPT_MEMBER = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError)


@dataclass
class Member:
    name: str  # shown as "<archive>:<member>"
    category: str
    data: bytes


@dataclass
class Rejected:
    name: str
    reason: str


class MemberRefused(Exception):
    pass


def _unsafe(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return name.startswith("/") or ".." in parts or bool(re.match(r"^[A-Za-z]:", name)) or "\x00" in name


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, budget: int) -> bytes:
    """The member's bytes, stopping as soon as it passes its own cap or the archive's remaining budget."""
    out = bytearray()
    limit = min(cap, budget)
    with archive.open(info) as stream:
        while True:
            chunk = stream.read(min(CHUNK, limit + 1 - len(out)))
            if not chunk:
                break
            out += chunk
            if len(out) > limit:
                if len(out) > budget:
                    raise MemberRefused("archive inflates past ATELIER_MAX_ARCHIVE_INFLATED_BYTES")
                raise MemberRefused(f"file inflates past ATELIER_MAX_UPLOAD_BYTES ({cap} bytes)")
    if len(out) != info.file_size:
        raise MemberRefused("member size does not match its header")
    return bytes(out)


def directory_refusal(fileobj: BinaryIO, settings: Settings) -> str | None:
    """Why the archive is refused from its end-of-central-directory record alone, or None.

    zipfile parses the whole central directory into ZipInfo objects (about 500 B each) before any cap
    of ours can look at it: millions of tiny entries in a 512 MB upload would cost gigabytes. The end
    record (ZIP64 included) declares the directory's size and entry count; zipfile reads exactly the
    declared size, so bounding it bounds the parse, whatever the count claims."""
    try:
        end = zipfile._EndRecData(fileobj)  # the record zipfile itself trusts  # noqa: SLF001
    except (OSError, ValueError, EOFError, struct.error):
        end = None
    finally:
        fileobj.seek(0)
    if end is None:
        return "corrupt ZIP archive"
    size, entries = end[zipfile._ECD_SIZE], end[zipfile._ECD_ENTRIES_TOTAL]  # noqa: SLF001
    if size > settings.max_zip_directory_bytes:
        return (
            f"ZIP central directory is {size} bytes, the limit is {settings.max_zip_directory_bytes} "
            "(ATELIER_MAX_ZIP_DIRECTORY_BYTES)"
        )
    if entries > 2 * settings.max_zip_members:  # a folder entry per file at most doubles the count
        return (
            f"ZIP declares {entries} entries, the limit is {settings.max_zip_members} files "
            "(ATELIER_MAX_ZIP_MEMBERS)"
        )
    return None


def expand(fileobj: BinaryIO, archive_name: str, *, settings: Settings) -> Iterator[Member | Rejected]:
    """Members and rejections of one ZIP, in archive order; a refused archive yields one Rejected."""
    reason = directory_refusal(fileobj, settings)
    if reason:
        yield Rejected(archive_name, reason)
        return
    try:
        archive = zipfile.ZipFile(fileobj)
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        yield Rejected(archive_name, "corrupt ZIP archive")
        return
    with archive:
        yield from _expand(archive, infos, archive_name, settings)


def _expand(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], archive_name: str, settings: Settings
) -> Iterator[Member | Rejected]:
    members = [m for m in infos if not m.is_dir()]
    reason = _archive_refusal(infos, settings)  # refuse the whole archive before reading anything
    if reason:
        yield Rejected(archive_name, reason)
        return
    budget = settings.max_archive_inflated_bytes
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.name.startswith(".") or "__MACOSX" in path.parts:
            continue
        shown = f"{archive_name}:{member.filename}"
        reason = _refusal(member, path, settings)
        if reason:
            yield Rejected(shown, reason)
            continue
        try:
            data = _read_bounded(archive, member, settings.max_upload_bytes, budget)
        except MemberRefused as exc:
            yield Rejected(shown, str(exc))
            if "ARCHIVE_INFLATED" in str(exc):
                return
            continue
        except CORRUPT_MEMBER as exc:
            yield Rejected(shown, f"corrupt ZIP member: {_short(exc)}")
            continue
        budget -= len(data)
        if data[:8].startswith(ARCHIVE_MAGIC):
            yield Rejected(shown, "nested archive: archives inside archives are refused")
            continue
        yield Member(shown, path.parts[-2], data)


def _archive_refusal(infos: list[zipfile.ZipInfo], settings: Settings) -> str | None:
    """Why the whole archive is refused before any member is read, or None."""
    members = [m for m in infos if not m.is_dir()]
    for member in members:
        if _unsafe(member.filename.replace("\\", "/")):
            return f"unsafe path in ZIP: {member.filename!r}"
    if len(members) > settings.max_zip_members:
        limit = settings.max_zip_members
        return f"ZIP has {len(members)} files, the limit is {limit} (ATELIER_MAX_ZIP_MEMBERS)"
    declared = sum(m.file_size for m in members)
    if declared > settings.max_archive_inflated_bytes:
        return (
            f"ZIP declares {declared} bytes inflated, the limit is {settings.max_archive_inflated_bytes} "
            "(ATELIER_MAX_ARCHIVE_INFLATED_BYTES)"
        )
    return None


def member_names(fileobj: BinaryIO, *, settings: Settings) -> list[str]:
    """The member names of a ZIP (its central directory only); ValueError when the whole archive is
    refused, with the reason that `expand` would give."""
    reason = directory_refusal(fileobj, settings)
    if reason:
        raise ValueError(reason)
    try:
        with zipfile.ZipFile(fileobj) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError("corrupt ZIP archive") from exc
    reason = _archive_refusal(infos, settings)
    if reason:
        raise ValueError(reason)
    return [m.filename.replace("\\", "/") for m in infos if not m.is_dir()]


def extract_tree(
    fileobj: BinaryIO, dest: Path, *, settings: Settings, wanted: Callable[[PurePosixPath], bool]
) -> list[Rejected]:
    """Write the members of a ZIP for which `wanted(path)` holds under `dest`, with the caps and
    checks of `expand` (a text member is capped like a photo, at ATELIER_MAX_UPLOAD_BYTES); members
    not wanted are never inflated. The rejections, one per refused member; a refused archive raises
    ValueError with its reason. Paths were checked safe before anything is written."""
    member_names(fileobj, settings=settings)  # no unsafe path; member count and declared total in caps
    fileobj.seek(0)
    rejected: list[Rejected] = []
    budget = settings.max_archive_inflated_bytes
    with zipfile.ZipFile(fileobj) as archive:
        for member in archive.infolist():
            path = PurePosixPath(member.filename.replace("\\", "/"))
            if member.is_dir() or path.name.startswith(".") or "__MACOSX" in path.parts or not wanted(path):
                continue
            if path.suffix.lower() in ARCHIVE_SUFFIXES:
                rejected.append(Rejected(str(path), "nested archive: archives inside archives are refused"))
                continue
            reason = _member_refusal(member, settings)
            if reason:
                rejected.append(Rejected(str(path), reason))
                continue
            try:
                data = _read_bounded(archive, member, settings.max_upload_bytes, budget)
            except MemberRefused as exc:
                rejected.append(Rejected(str(path), str(exc)))
                if "ARCHIVE_INFLATED" in str(exc):
                    break
                continue
            except CORRUPT_MEMBER as exc:
                rejected.append(Rejected(str(path), f"corrupt ZIP member: {_short(exc)}"))
                continue
            budget -= len(data)
            if data[:8].startswith(ARCHIVE_MAGIC):
                rejected.append(Rejected(str(path), "nested archive: archives inside archives are refused"))
                continue
            target = dest.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return rejected


def _refusal(member: zipfile.ZipInfo, path: PurePosixPath, settings: Settings) -> str | None:
    if path.suffix.lower() in ARCHIVE_SUFFIXES:
        return "nested archive: archives inside archives are refused"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image: expected .jpg, .png or .webp"
    if len(path.parts) < 2:
        return "no category: put photos in category folders"
    return _member_refusal(member, settings)


def _member_refusal(member: zipfile.ZipInfo, settings: Settings) -> str | None:
    """The checks of any member, whatever it holds: encryption, method, size and ratio."""
    if member.flag_bits & 0x1:
        return "encrypted ZIP member: send it unencrypted"
    if member.compress_type not in ALLOWED_METHODS:
        method = METHOD_NAMES.get(member.compress_type, f"method {member.compress_type}")
        return f"unsupported compression {method}: only STORED and DEFLATED members are accepted"
    if member.file_size > settings.max_upload_bytes:
        return (
            f"file too large: {member.file_size} bytes, the limit is {settings.max_upload_bytes} "
            "(ATELIER_MAX_UPLOAD_BYTES)"
        )
    ratio = member.file_size / max(member.compress_size, 1)
    if ratio > settings.max_archive_ratio:
        return (
            f"inflate ratio {ratio:.0f} is over the limit of {settings.max_archive_ratio:.0f} "
            "(ATELIER_MAX_ARCHIVE_RATIO)"
        )
    return None


def _short(exc: Exception) -> str:
    """zipfile's messages are short and safe ("Bad CRC-32 for file ..."); cut any long one."""
    text = str(exc).split(" for file ")[0] or type(exc).__name__
    return text[:80]
