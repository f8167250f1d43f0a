"""Zip archives (torch.save's, torch.jit.save's, torch.export.save's) read as torch reads them.

archprof checks an archive's members with Python's `zipfile` before torch loads it, and torch
reads it with a reader of its own (miniz, in `PyTorchStreamReader`). A hostile file can make
the two see different members, and then what archprof checked is not what torch runs:

- Data before the archive: `zipfile` moves every offset by it, torch takes the offsets as
  written, so a second central directory placed where the offsets point is torch's alone.
- Data after the end record (or in its comment): each reader may find another end record.
- A member count that disagrees with the central directory.
- Names that differ only in case: torch looks members up ignoring ASCII case, so
  `code/__torch__.PY` is the code it runs for `code/__torch__.py`; two such names, and
  either may be the one torch reads.

`checked_archive` refuses all of these, and every check of a member (zip bombs here, code and
pickles in `torchscript`, declared sizes in `exported`) reads through it, matching names as
torch does (`folded`). Whether a file is an archive at all is torch.load's own test: it
opens with a local file header (`is_torch_zip`); a file that does not is read as a pickle,
weights-only.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from archprof.errors import ArchprofError, first_line
from archprof.load.common import shorten

_LOCAL_HEADER = b"PK\x03\x04"
_END = struct.Struct("<4s4H2LH")  # signature, disks, entries here and in all, size and offset of the directory, comment
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 end record, disks
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # ..., entries here and in all, size and offset of the directory
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_NOT_AT_THE_END = "its last bytes are not the archive's end record"

# torch inflates a compressed member whole in memory, up to the size the zip's directory gives
# it. torch.save and torch.export.save store every member uncompressed, torch.jit.save its
# tensors (code it deflates, about fivefold). A member that would grow over a hundredfold,
# past 1 MiB, is a zip bomb (a 1 MB file holding a 1 GB pickle took torch 11 s and 2.3 GB),
# neither code nor weights: a float tensor hardly compresses.
_MOST_EXPANSION = 100
_SMALL_MEMBER = 2**20


def is_torch_zip(path: Path) -> bool:
    """Whether torch.load reads the file as a zip archive: it opens with a local file header
    (`torch.serialization._is_zipfile`'s test); else torch.load reads it as a pickle."""
    with path.open("rb") as stream:
        return stream.read(len(_LOCAL_HEADER)) == _LOCAL_HEADER


def folded(name: str) -> str:
    """A member's name as torch matches it: ASCII case ignored (Python's `lower` folds more
    letters, so two names it makes one are refused as one: never fewer)."""
    return name.lower()


def checked_archive(path: Path, shown: str) -> zipfile.ZipFile:
    """The archive at `path` opened with `zipfile` (the caller closes it), once it is sure to
    hold the members torch reads: refused otherwise, and where a member is a zip bomb, naming
    the file `shown`."""
    try:
        archive = zipfile.ZipFile(path)
    # NotImplementedError: a version or a feature zipfile does not read ("zip file version 23.5");
    # BadZipFile from its own read too ("zipfiles that span multiple disks"), and where it finds
    # no whole end record (torch may: a lone signature after it hid a zip bomb from this check).
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise ArchprofError(f"cannot read {shown}: corrupted or truncated ({first_line(exc, bare=True)})") from None
    try:
        if archive.comment:  # torch writes none; it may hold another end record, which torch may take
            problem = "it has a comment"
        else:
            end = _end_record(path)
            problem = end if isinstance(end, str) else _directory_problem(archive, *end)
        if problem == _NOT_AT_THE_END:
            raise ArchprofError(f"cannot read {shown}: corrupted or truncated ({problem})")
        if problem:
            raise _ambiguous(shown, problem)
        _refuse_zip_bombs(shown, archive.infolist())
    except BaseException:
        archive.close()
        raise
    return archive


def _ambiguous(shown: str, problem: str) -> ArchprofError:
    return ArchprofError(f"cannot read {shown}: {problem}, where torch and Python's zipfile would read different files")


def _end_record(path: Path) -> tuple[int, int] | str:
    """The member count and the central directory's offset that the archive's end record (or
    its zip64 record) gives, as torch reads them; or why torch could find another."""
    with path.open("rb") as stream:
        size = stream.seek(0, 2)  # at least an end record's: zipfile has read one
        stream.seek(size - _END.size)
        signature, _, _, _, entries, _, offset, comment = _END.unpack(stream.read(_END.size))
        if signature != _END_SIGNATURE or comment:  # cut short, or data after the end (torch may find another)
            return _NOT_AT_THE_END
        if offset != 0xFFFFFFFF and entries != 0xFFFF:
            return entries, offset
        # Too large for the end record: its zip64 record holds them.
        stream.seek(max(0, size - _END.size - _ZIP64_LOCATOR.size))
        located = stream.read(_ZIP64_LOCATOR.size)
        if len(located) < _ZIP64_LOCATOR.size or located[:4] != _ZIP64_LOCATOR_SIGNATURE:
            return "its zip64 end record is missing"
        stream.seek(_ZIP64_LOCATOR.unpack(located)[2])
        record = stream.read(_ZIP64_END.size)
        if len(record) < _ZIP64_END.size or record[:4] != _ZIP64_END_SIGNATURE:
            return "its zip64 end record is missing"
        _, _, _, _, _, _, _, entries, _, offset = _ZIP64_END.unpack(record)
        return entries, offset


def _directory_problem(archive: zipfile.ZipFile, entries: int, offset: int) -> str | None:
    """Why torch, reading `entries` members from the directory at `offset`, could read other
    members than `archive` lists, if so."""
    if offset != archive.start_dir:  # zipfile moved the offsets by what lies in front
        return "it holds data before the archive"
    members = archive.infolist()
    if len(members) != entries:
        return f"its end record counts {entries:,} members where its directory lists {len(members):,}"
    names: dict[str, str] = {}
    for member in members:
        name = folded(member.filename)
        if name in names:
            return f"it names two members {shorten(names[name])} and {shorten(member.filename)}, one to torch"
        names[name] = member.filename
    return None


def refuse_a_zip_bomb_in(data: object, shown: str) -> None:
    """Where `data` (what torch.load is handed: bytes, or a stream of them) is a zip archive,
    refuse it as `checked_archive` refuses a member that is a zip bomb: an exported program
    hands the archives it holds (its sample inputs, weights, constants) to torch.load from
    memory, which checks none (a 3.9 MB program inflated 4 GB of zeros as it loaded)."""
    import io

    if isinstance(data, bytes | bytearray):
        data = io.BytesIO(data)
    if not isinstance(data, io.BytesIO) or data.getbuffer()[:4] != b"PK\x03\x04":
        return
    try:
        members = zipfile.ZipFile(data).infolist()
    except (zipfile.BadZipFile, NotImplementedError, ValueError):
        return  # torch says what is wrong with it
    finally:
        data.seek(0)
    _refuse_zip_bombs(shown, members)


def _refuse_zip_bombs(shown: str, members: list[zipfile.ZipInfo]) -> None:
    for member in members:
        if member.file_size > max(_SMALL_MEMBER, _MOST_EXPANSION * member.compress_size):
            raise ArchprofError(
                f"cannot read {shown}: its member {shorten(member.filename)} would expand from"
                f" {member.compress_size:,} to {member.file_size:,} bytes (a zip bomb?)"
            )
    # And together: many members each small enough to pass alone (a TorchScript file of ten
    # code files of 1 MiB, 1 KB each deflated, which the checker would parse, 2.5 GB).
    expanded, packed = sum(m.file_size for m in members), sum(m.compress_size for m in members)
    if expanded > max(_SMALL_MEMBER, _MOST_EXPANSION * packed):
        raise ArchprofError(
            f"cannot read {shown}: its members would expand from {packed:,} to {expanded:,} bytes in all (a zip bomb?)"
        )
