"""Dataset downloads, against a file server on loopback (never the internet): checksums, resume, unsafe archives."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pixelwise.data import download
from pixelwise.data.download import DOWNLOADS, download_dataset, download_url, extract_archive
from pixelwise.errors import DatasetError

VOC_FILES = {
    "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg": b"\xff\xd8jpeg bytes" * 50,
    "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png": b"\x89PNG mask bytes" * 50,
    "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": b"2007_000032\n",
}


def make_tar(files: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class FileServer(ThreadingHTTPServer):
    """Serves ``files`` by name; records ``(path, Range header, status)`` of every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None, int]] = []
        self.ranges = True  # honour Range with 206; False: ignore it and answer 200 with the whole file
        self.truncate = False  # announce the whole length but send half, then hang up
        self.stall = 0.0  # seconds to wait before answering
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server: FileServer = self.server
        time.sleep(server.stall)
        data = server.files.get(self.path.lstrip("/"))
        rng = self.headers.get("Range")
        status = 404 if data is None else 206 if rng and server.ranges else 200
        server.requests.append((self.path, rng, status))
        if data is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").rstrip("-")) if status == 206 else 0
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if server.truncate else body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture
def voc(server, monkeypatch):
    """The VOC tar on the server, with DOWNLOADS' md5 set to the tar's."""
    data = make_tar(VOC_FILES)
    server.files["VOCtrainval_11-May-2012.tar"] = data
    monkeypatch.setitem(DOWNLOADS["voc2012"]["archives"][0], "md5", md5(data))
    return data


def test_voc2012_download_unpacks_and_second_call_uses_the_cache(server, voc, tmp_path):
    root = tmp_path / "data"
    folder = download_dataset("voc2012", root, progress=False, base_url=server.url)
    assert folder == root / "VOCdevkit" / "VOC2012"
    for name, data in VOC_FILES.items():
        assert (root / name).read_bytes() == data
    assert server.requests == [("/VOCtrainval_11-May-2012.tar", None, 200)]
    assert (root / "VOCtrainval_11-May-2012.tar").read_bytes() == voc
    assert sorted(p.name for p in root.iterdir()) == [
        ".pixelwise-extracted-VOCtrainval_11-May-2012.tar", "VOCdevkit", "VOCtrainval_11-May-2012.tar"
    ]  # no .part, no half-extracted temp folder

    assert download_dataset("voc2012", root, progress=False, base_url=server.url) == folder
    (root / "VOCtrainval_11-May-2012.tar").unlink()  # the user frees the space: still nothing to fetch
    assert download_dataset("voc2012", root, progress=False, base_url=server.url) == folder
    assert len(server.requests) == 1


def test_md5_mismatch_names_url_and_both_md5s_and_leaves_nothing(server, tmp_path):
    data = make_tar(VOC_FILES)
    server.files["a.tar"] = data
    path = tmp_path / "a.tar"
    with pytest.raises(DatasetError) as info:
        download_url(server.url + "a.tar", path, md5="0" * 32, progress=False)
    message = str(info.value)
    assert server.url + "a.tar" in message and "0" * 32 in message and md5(data) in message
    assert not path.exists() and not (tmp_path / "a.tar.part").exists()


def test_existing_file_is_kept_when_its_md5_matches_and_fetched_again_when_not(server, tmp_path):
    data = b"archive bytes" * 100
    server.files["a.tar"] = data
    path = tmp_path / "a.tar"
    path.write_bytes(data)
    assert download_url(server.url + "a.tar", path, md5=md5(data), progress=False) == path
    assert server.requests == []
    path.write_bytes(b"stale")
    download_url(server.url + "a.tar", path, md5=md5(data), progress=False)
    assert path.read_bytes() == data and len(server.requests) == 1


def test_part_file_is_resumed_with_a_range_request(server, tmp_path):
    data = make_tar(VOC_FILES)
    server.files["a.tar"] = data
    half = len(data) // 2
    (tmp_path / "a.tar.part").write_bytes(data[:half])
    path = download_url(server.url + "a.tar", tmp_path / "a.tar", md5=md5(data), progress=False)
    assert server.requests == [("/a.tar", f"bytes={half}-", 206)]
    assert path.read_bytes() == data and not (tmp_path / "a.tar.part").exists()


def test_server_ignoring_range_makes_the_download_start_over(server, tmp_path):
    data = make_tar(VOC_FILES)
    server.files["a.tar"] = data
    server.ranges = False
    (tmp_path / "a.tar.part").write_bytes(data[: len(data) // 2])
    path = download_url(server.url + "a.tar", tmp_path / "a.tar", md5=md5(data), progress=False)
    assert server.requests[0][2] == 200
    assert path.read_bytes() == data


def test_interrupted_download_keeps_the_part_and_a_rerun_resumes(server, tmp_path):
    data = make_tar(VOC_FILES)
    server.files["a.tar"] = data
    server.truncate = True
    with pytest.raises(DatasetError, match="a.tar") as info:
        download_url(server.url + "a.tar", tmp_path / "a.tar", md5=md5(data), progress=False)
    assert "run again to resume" in str(info.value)
    part = tmp_path / "a.tar.part"
    assert part.read_bytes() == data[: len(data) // 2]
    server.truncate = False
    download_url(server.url + "a.tar", tmp_path / "a.tar", md5=md5(data), progress=False)
    assert server.requests[-1] == ("/a.tar", f"bytes={len(data) // 2}-", 206)
    assert (tmp_path / "a.tar").read_bytes() == data


def test_http_404_names_the_url(server, tmp_path):
    url = server.url + "missing.tar"
    with pytest.raises(DatasetError, match="404") as info:
        download_url(url, tmp_path / "missing.tar", progress=False)
    assert url in str(info.value)
    assert not (tmp_path / "missing.tar").exists()


def test_refused_connection_names_the_url(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.tar"
    with pytest.raises(DatasetError) as info:
        download_url(url, tmp_path / "a.tar", progress=False)
    assert url in str(info.value)


def test_timeout_names_the_url(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT", 0.1)
    server.files["a.tar"] = b"x"
    server.stall = 0.5
    with pytest.raises(DatasetError, match="timed out") as info:
        download_url(server.url + "a.tar", tmp_path / "a.tar", progress=False)
    assert server.url + "a.tar" in str(info.value)


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/pixelwise-evil.txt", "link"])
def test_tar_member_outside_dest_is_refused(tmp_path, evil):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        good = tarfile.TarInfo("data/good.txt")
        good.size = 4
        tar.addfile(good, io.BytesIO(b"good"))
        info = tarfile.TarInfo(evil)
        if evil == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "../.."
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    archive = tmp_path / "evil.tgz"
    archive.write_bytes(buf.getvalue())
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match=r"evil\.tgz") as err:
        extract_archive(archive, dest)
    assert repr(evil) in str(err.value)
    assert not (tmp_path / "evil.txt").exists()
    assert list(dest.iterdir()) == []  # not even the good member: no half tree, no marker


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/pixelwise-evil.txt", "a/../../evil.txt"])
def test_zip_member_outside_dest_is_refused(tmp_path, evil):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"data/good.txt": b"good", evil: b"evil"}))
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match=r"evil\.zip") as err:
        extract_archive(archive, dest)
    assert repr(evil) in str(err.value)
    assert not (tmp_path / "evil.txt").exists()
    assert list(dest.iterdir()) == []


def test_ade20k_zip_unpacks_and_reports_md5_and_sha256(server, tmp_path, capsys):
    files = {
        "ADEChallengeData2016/images/training/x.jpg": b"\xff\xd8image" * 30,
        "ADEChallengeData2016/annotations/training/x.png": b"\x89PNGmask" * 30,
    }
    data = make_zip(files)
    server.files["ADEChallengeData2016.zip"] = data
    assert DOWNLOADS["ade20k"]["archives"][0]["md5"] is None
    folder = download_dataset("ade20k", tmp_path, progress=False, base_url=server.url)
    assert folder == tmp_path / "ADEChallengeData2016"
    for name, content in files.items():
        assert (tmp_path / name).read_bytes() == content
    err = capsys.readouterr().err
    assert md5(data) in err and hashlib.sha256(data).hexdigest() in err


def test_extract_skips_when_marker_exists(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_bytes(make_tar({"d/f.txt": b"v1"}))
    dest = tmp_path / "dest"
    extract_archive(archive, dest)
    (dest / "d" / "f.txt").write_bytes(b"edited")
    assert extract_archive(archive, dest) == dest
    assert (dest / "d" / "f.txt").read_bytes() == b"edited"


def test_cityscapes_explains_the_manual_download(tmp_path):
    with pytest.raises(DatasetError, match="cityscapes-dataset.com") as err:
        download_dataset("cityscapes", tmp_path)
    assert "gtFine_trainvaltest.zip" in str(err.value) and "leftImg8bit_trainvaltest.zip" in str(err.value)


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(DatasetError, match="voc2012") as err:
        download_dataset("voc2007", tmp_path)
    for name in (*download.DOWNLOADS, "cityscapes"):
        assert name in str(err.value)
