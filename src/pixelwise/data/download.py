"""Download public segmentation datasets, verify their checksums and unpack them.

``download_dataset("voc2012", root)`` fetches ``VOCtrainval_11-May-2012.tar`` into ``root``, checks its md5,
unpacks it and returns ``root/VOCdevkit/VOC2012``. A rerun skips the archives it has already unpacked (a marker
file ``root/.pixelwise-extracted-<archive>`` records each success), and an interrupted download resumes from its
``<archive>.part`` file. The archives are kept in ``root``; delete them once unpacked if disk space matters.

ADE20K's md5 is not published by a source we trust, so its entry holds ``md5=None``: the archive is not verified,
and its md5 and sha256 are printed instead, for the user to compare with a copy they trust. Cityscapes needs a
login, so it cannot be fetched here (see ``CITYSCAPES_HELP``). ``base_url`` points every download at a mirror.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from pixelwise.errors import DatasetError

DOWNLOADS = {
    "voc2012": {
        "folder": "VOCdevkit/VOC2012",
        "archives": [{
            "url": "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            "filename": "VOCtrainval_11-May-2012.tar",
            "md5": "6cd6e144f989b92b3379bac3b3de84fd",
        }],
    },
    "sbd": {
        "folder": "benchmark_RELEASE",
        "archives": [{
            "url": "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
            "filename": "benchmark.tgz",
            "md5": "82b4d87ceb2ed10f6038a1cba92111cb",
        }],
    },
    "ade20k": {
        "folder": "ADEChallengeData2016",
        "archives": [{
            "url": "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
            "filename": "ADEChallengeData2016.zip",
            "md5": None,  # not published by a trusted source: the computed md5 and sha256 are printed instead
        }],
    },
}

CITYSCAPES_HELP = (
    "Cityscapes cannot be downloaded without a login: register at https://www.cityscapes-dataset.com, download "
    "gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip, and unzip both into one folder"
)
CHUNK = 1 << 20
TIMEOUT = 60  # seconds without a byte before a download gives up (a rerun resumes it)


def download_url(url: str, path: str | Path, md5: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``path``, verifying its md5.

    The bytes stream into ``path + ".part"``, which is renamed to ``path`` only once verified. An existing part file
    is resumed with an HTTP Range request (or started over when the server ignores the range). An existing ``path``
    whose md5 matches is kept without downloading; one that does not match is downloaded again.

    Args:
        url: the file's address (http, https, or anything ``urllib.request`` opens).
        path: where the file goes; its folder is created.
        md5: the expected md5 hex digest, or None to skip the check and print the file's md5 and sha256 instead.
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DatasetError: the download failed (the message names the URL; the part file is kept so a rerun resumes),
            or the md5 does not match (the part file is deleted).
    """
    path = Path(path)
    if path.is_file():
        actual, sha256 = _hash_file(path, hashlib.md5(usedforsecurity=False), hashlib.sha256())
        if md5 is None or actual == md5:
            if md5 is None:
                _report_digests(path, actual, sha256)
            return path
        print(f"{path} exists but its md5 is {actual}, not {md5}: downloading it again", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    actual, sha256 = _stream(url, path, part, progress, resume=True)
    if md5 is not None and actual != md5:
        part.unlink(missing_ok=True)
        raise DatasetError(
            f"the file downloaded from {url} has md5 {actual}, expected {md5}: it is corrupt or has changed. "
            f"Run again to retry, or download it by hand and put it at {path}"
        )
    os.replace(part, path)
    if md5 is None:
        _report_digests(path, actual, sha256)
    return path


def extract_archive(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a tar (plain or gzip) or zip archive into ``dest``.

    The archive is unpacked into a hidden folder inside ``dest`` and then moved into place, and the marker file
    ``dest/.pixelwise-extracted-<archive name>`` is written only after that succeeds; when the marker exists,
    nothing is done. Members that would land outside ``dest`` (absolute paths, ``..``, links pointing out) are
    refused before anything of them is written.

    Args:
        archive: the archive file.
        dest: the folder to unpack into (created if missing).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DatasetError: the archive is unreadable or not a tar/zip, or has a member that would land outside ``dest``
            (the message names the archive and the member).
    """
    archive, dest = Path(archive), Path(dest)
    marker = _marker(dest, archive.name)
    if marker.is_file():
        return dest
    tmp = dest / f".pixelwise-extracting-{archive.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # the leftover of an interrupted extraction
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _check_member(archive, name, tmp)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp)
        else:
            raise DatasetError(f"{archive} is neither a tar nor a zip archive: delete it and download it again")
        _merge(tmp, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise DatasetError(f"cannot unpack {archive}: {err}. Delete it and download it again") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(f"{archive.name} unpacked here by pixelwise\n")
    return dest


def download_dataset(name: str, root: str | Path, progress: bool = True, base_url: str | None = None) -> Path:
    """Download, verify and unpack the archives of dataset ``name`` (a key of ``DOWNLOADS``) into ``root``.

    Args:
        name: ``"voc2012"``, ``"sbd"`` or ``"ade20k"``.
        root: the folder that receives the archives and what they unpack to (created if missing).
        progress: show a progress bar for each download.
        base_url: a mirror that replaces the scheme, host and directory of every URL, e.g.
            ``"http://127.0.0.1:8000/"`` fetches ``http://127.0.0.1:8000/VOCtrainval_11-May-2012.tar``.

    Returns:
        The dataset folder, e.g. ``root/VOCdevkit/VOC2012``.

    Raises:
        DatasetError: ``name`` is unknown or is ``"cityscapes"`` (which needs a manual download), or a download,
            checksum or extraction failed (see :func:`download_url` and :func:`extract_archive`).
    """
    if name == "cityscapes":
        raise DatasetError(CITYSCAPES_HELP)
    if name not in DOWNLOADS:
        raise DatasetError(
            f"unknown dataset {name!r}: the known ones are {', '.join(sorted(DOWNLOADS))} "
            "(and cityscapes, which needs a manual download)"
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entry = DOWNLOADS[name]
    for item in entry["archives"]:
        if _marker(root, item["filename"]).is_file():
            continue
        url = item["url"] if base_url is None else base_url.rstrip("/") + "/" + item["url"].rsplit("/", 1)[-1]
        extract_archive(download_url(url, root / item["filename"], item["md5"], progress), root)
    folder = root / entry["folder"]
    if not folder.is_dir():
        raise DatasetError(f"the {name} archives were unpacked into {root}, but {folder} is not there")
    return folder


def _stream(url: str, path: Path, part: Path, progress: bool, resume: bool) -> tuple[str, str]:
    """Download ``url`` into ``part`` (resuming it when ``resume``); return its md5 and sha256 hex digests."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    offset = part.stat().st_size if resume and part.is_file() else 0
    headers = {"User-Agent": "pixelwise"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    kept = f"The partial download {part} is kept: run again to resume, or download the file by hand to {path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as response:
            if offset and response.status == 206:
                if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    return _stream(url, path, part, progress, resume=False)  # a range we did not ask for
                _hash_file(part, md5, sha256)
            else:
                offset = 0  # no part file, or the server ignores ranges: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            received = offset
            with open(part, "ab" if offset else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=path.name, disable=not progress
            ) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    md5.update(chunk)
                    sha256.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:  # the part file is not a prefix the server can continue
            return _stream(url, path, part, progress, resume=False)
        raise DatasetError(f"cannot download {url}: HTTP {err.code} {err.reason}. {kept}") from err
    except (OSError, http.client.HTTPException) as err:  # URLError, refused/reset connection, timeout
        raise DatasetError(f"cannot download {url}: {getattr(err, 'reason', err)}. {kept}") from err
    if total is not None and received != total:
        raise DatasetError(f"the download of {url} stopped after {received} of {total} bytes. {kept}")
    return md5.hexdigest(), sha256.hexdigest()


def _hash_file(path: Path, *hashes) -> tuple[str, ...]:
    """Feed the bytes of ``path`` to every hash object; return their hex digests."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashes:
                h.update(chunk)
    return tuple(h.hexdigest() for h in hashes)


def _report_digests(path: Path, md5: str, sha256: str) -> None:
    print(f"{path} has no published checksum to verify against; compare these with a copy you trust:\n"
          f"  md5    {md5}\n  sha256 {sha256}", file=sys.stderr)


def _marker(dest: Path, archive_name: str) -> Path:
    return dest / f".pixelwise-extracted-{archive_name}"


def _check_member(archive: Path, name: str, root: Path) -> None:
    """Refuse an archive member whose path is absolute or leads outside ``root``."""
    clean = name.replace("\\", "/")
    target = os.path.normpath(os.path.join(root, clean))
    if clean.startswith("/") or re.match(r"[A-Za-z]:", clean) or os.path.commonpath([root, target]) != str(root):
        raise DatasetError(f"{archive} has a member {name!r} that would land outside {root.parent}: refusing it")


def _extract_tar(archive: Path, tmp: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            _check_member(archive, m.name, tmp)  # the data filter would strip a leading "/": refuse it instead
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: also checks links and special files
            try:
                tar.extractall(tmp, filter="data")
            except tarfile.FilterError as err:
                member = getattr(err, "tarinfo", None)
                raise DatasetError(
                    f"{archive} has an unsafe member {getattr(member, 'name', '?')!r}: refusing it ({err})"
                ) from err
            return
        for m in members:
            if not (m.isfile() or m.isdir()):
                raise DatasetError(f"{archive} has a link or special file {m.name!r}: refusing it on this Python")
        tar.extractall(tmp, members)


def _merge(src: Path, dst: Path) -> None:
    """Move the contents of ``src`` into ``dst``, merging folders that exist in both."""
    for child in src.iterdir():
        target = dst / child.name
        if child.is_dir() and target.is_dir() and not target.is_symlink():
            _merge(child, target)
        else:
            os.replace(child, target)
