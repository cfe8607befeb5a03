"""`signlab download` against a local HTTP server on 127.0.0.1 serving small archives with the official layouts.

The server supports Range and can drop a transfer halfway, ignore Range or answer 404; it logs every request's
path and Range header. The archives' MD5s are put into signlab.download.MD5 in place of the published ones.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import make_gtsrb_test, make_gtsrb_train
from PIL import Image

from signlab import download as dl
from signlab.cli import main
from signlab.layouts import detect_layout, list_entries

GTSRB_NAMES = ("GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        state = self.server.state
        rng = self.headers.get("Range")
        state["log"].append((self.path, rng))
        body = state["files"].get(self.path.rsplit("/", 1)[-1])
        if body is None or state["mode"] == "404":
            self.send_error(404)
            return
        start = 0
        if rng and state["mode"] != "ignore_range":
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        # "drop": half the announced bytes, then the connection closes (HTTP/1.0: one request per connection).
        self.wfile.write(rest[:len(rest) // 2] if state["mode"] == "drop" else rest)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = {"files": {}, "mode": "ok", "log": []}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/archives/"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No proxy for 127.0.0.1, no mirror from the environment, and a stalled test fails fast."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    monkeypatch.delenv(dl.ENV_URL, raising=False)
    monkeypatch.setattr(dl, "TIMEOUT_S", 5.0)


def zip_tree(folder: Path, prefix: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def gtsrb_archives(tmp_path: Path, extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """The three GTSRB archives with the official member paths, a few tiny images each."""
    train = make_gtsrb_train(tmp_path / "src_train", classes=(0, 1), tracks=2, frames=2)
    test = make_gtsrb_test(tmp_path / "src_test", n=4)
    gt_csv = (test / "Images" / "GT-final_test.csv").read_bytes()
    (test / "Images" / "GT-final_test.csv").rename(test / "Images" / "GT-final_test.test.csv")
    return {
        "GTSRB_Final_Training_Images.zip": zip_tree(train, "GTSRB/Final_Training/",
                                                    {"GTSRB/Readme-Images.txt": b"readme", **(extra or {})}),
        "GTSRB_Final_Test_Images.zip": zip_tree(test, "GTSRB/Final_Test/"),
        "GTSRB_Final_Test_GT.zip": zip_tree(tmp_path / "nothing", "", {"GT-final_test.csv": gt_csv}),
    }


def gtsdb_archive() -> bytes:
    """FullIJCNN2013.zip's layout: 900 scenes, gt.txt of 1,213 lines, sign crops in class folders."""
    ppm = io.BytesIO()
    Image.fromarray(np.full((2, 2, 3), 128, np.uint8)).save(ppm, format="PPM")
    files = {f"FullIJCNN2013/{i:05d}.ppm": ppm.getvalue() for i in range(900)}
    files["FullIJCNN2013/gt.txt"] = "".join(f"{i % 900:05d}.ppm;1;2;30;40;{i % 43}\n" for i in range(1213)).encode()
    files["FullIJCNN2013/ReadMe.txt"] = b"readme"
    for cid in (0, 1, 14):
        files[f"FullIJCNN2013/{cid:02d}/00000.ppm"] = ppm.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def serve(server, monkeypatch, files: dict[str, bytes], sums: dict[str, bytes] | None = None) -> None:
    """Serve `files`; the MD5 table expects `sums` (default: the files themselves) for the GTSRB names."""
    server.state["files"].update(files)
    for name, data in (sums or files).items():
        if name in GTSRB_NAMES:
            monkeypatch.setitem(dl.MD5, name, hashlib.md5(data).hexdigest())


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["download", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("signlab download: error: "), err
    for w in words:
        assert w in err, err


def test_gtsrb_lands_in_the_layouts_signlab_reads_and_a_rerun_is_a_no_op(tmp_path, server, monkeypatch, capsys):
    serve(server, monkeypatch, gtsrb_archives(tmp_path))
    to = tmp_path / "data"
    code, out, err = run(capsys, "gtsrb", "--to", to, "--url-base", server.url)
    assert code == 0, err
    gtsrb = to / "GTSRB"
    assert detect_layout(gtsrb / "Final_Training") == ("gtsrb-train", gtsrb / "Final_Training" / "Images")
    assert detect_layout(gtsrb / "Final_Test") == ("gtsrb-test", gtsrb / "Final_Test" / "Images")
    assert (gtsrb / "Final_Test" / "Images" / "GT-final_test.csv").is_file()
    assert len(list_entries(gtsrb / "Final_Training")[2]) == 8 and len(list_entries(gtsrb / "Final_Test")[2]) == 4
    receipt = (gtsrb / "download.json").read_text()
    assert all(name in receipt and dl.MD5[name] in receipt for name in GTSRB_NAMES) and '"sha256"' in receipt
    assert sorted(p.name for p in to.iterdir()) == ["GTSRB"]  # no archive, .part or staging folder left
    assert out.count("MD5 matches") == 3
    assert out.splitlines()[-1] == (f"next: signlab train --data {gtsrb / 'Final_Training'}, "
                                    f"then signlab evaluate RUN --data {gtsrb / 'Final_Test'}")

    requests = len(server.state["log"])
    code, out, _ = run(capsys, "gtsrb", "--to", to, "--url-base", server.url)
    assert code == 0 and out.count("already downloaded and verified") == 3
    assert len(server.state["log"]) == requests and out.splitlines()[-1].startswith("next: signlab train")


def test_gtsdb_contents_checked_and_sha256_recorded(tmp_path, server, monkeypatch, capsys):
    data = gtsdb_archive()
    serve(server, monkeypatch, {"FullIJCNN2013.zip": data})
    monkeypatch.setenv(dl.ENV_URL, server.url)  # the mirror from the environment
    code, out, err = run(capsys, "gtsdb", "--to", tmp_path)
    assert code == 0, err
    scenes = tmp_path / "GTSDB" / "FullIJCNN2013"
    assert len(list(scenes.glob("*.ppm"))) == 900 and len((scenes / "gt.txt").read_text().splitlines()) == 1213
    sha = hashlib.sha256(data).hexdigest()
    assert f"SHA-256 {sha}" in out and sha in (tmp_path / "GTSDB" / "download.json").read_text()
    assert detect_layout(scenes) == ("folders", scenes)  # the sign crops in 00/, 01/, 14/
    assert out.splitlines()[-1] == f"next: signlab evaluate RUN --data {scenes} (its class folders hold the sign crops)"


def test_gtsdb_with_missing_scenes_is_deleted_unpacked(tmp_path, server, monkeypatch, capsys):
    serve(server, monkeypatch, {"FullIJCNN2013.zip": gtsdb_archive()})
    monkeypatch.setattr(dl, "GTSDB_SCENES", 901)
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", server.url)
    one_line_error(code, err, "FullIJCNN2013.zip", "1 of its 901 scenes are missing", "deleted the bad download")
    assert list(tmp_path.iterdir()) == []


def test_corrupted_download_is_deleted_before_anything_is_unpacked(tmp_path, server, monkeypatch, capsys):
    good = gtsrb_archives(tmp_path)
    bad = dict(good, **{GTSRB_NAMES[0]: good[GTSRB_NAMES[0]][:-40] + bytes(40)})
    serve(server, monkeypatch, bad, sums=good)
    to = tmp_path / "data"
    code, _, err = run(capsys, "gtsrb", "--to", to, "--url-base", server.url)
    one_line_error(code, err, GTSRB_NAMES[0], "does not match the published", "deleted the bad download")
    assert list(to.iterdir()) == []  # no .part, no archive, no GTSRB folder


def test_dropped_transfer_resumes_with_range_on_the_next_call(tmp_path, server, monkeypatch, capsys):
    data = gtsdb_archive()
    serve(server, monkeypatch, {"FullIJCNN2013.zip": data})
    server.state["mode"] = "drop"
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", server.url)
    one_line_error(code, err, f"{server.url}FullIJCNN2013.zip", "connection closed", "run the same command again")
    part = tmp_path / "FullIJCNN2013.zip.part"
    assert part.stat().st_size == len(data) // 2
    server.state["mode"] = "ok"
    code, out, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", server.url)
    assert code == 0, err
    assert server.state["log"][-1] == ("/archives/FullIJCNN2013.zip", f"bytes={len(data) // 2}-")
    assert f"resuming at byte {len(data) // 2:,}" in out
    assert hashlib.sha256(data).hexdigest() in out and not part.exists()


def test_server_that_ignores_range_starts_over_cleanly(tmp_path, server, monkeypatch, capsys):
    data = gtsdb_archive()
    serve(server, monkeypatch, {"FullIJCNN2013.zip": data})
    (tmp_path / "FullIJCNN2013.zip.part").write_bytes(data[:1000])
    server.state["mode"] = "ignore_range"
    code, out, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", server.url)
    assert code == 0, err
    assert server.state["log"] == [("/archives/FullIJCNN2013.zip", "bytes=1000-")]
    assert "does not resume downloads; starting over" in out
    assert hashlib.sha256(data).hexdigest() in out and (tmp_path / "GTSDB" / "FullIJCNN2013" / "gt.txt").is_file()


def test_a_complete_part_answered_416_is_verified_and_used(tmp_path, server, monkeypatch, capsys):
    data = gtsdb_archive()
    serve(server, monkeypatch, {"FullIJCNN2013.zip": data})
    (tmp_path / "FullIJCNN2013.zip.part").write_bytes(data)  # killed between the last byte and the rename
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", server.url)
    assert code == 0, err
    assert (tmp_path / "GTSDB" / "FullIJCNN2013" / "gt.txt").is_file()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/signlab-evil.txt", "GTSRB/Final_Training/link"])
def test_zip_slip_member_refuses_the_archive_before_writing(tmp_path, server, monkeypatch, capsys, member):
    if member.endswith("link"):
        info = zipfile.ZipInfo(member)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("GTSRB/Final_Training/Images/00000/GT-00000.csv", b"x")
            zf.writestr(info, "../../../evil.txt")
        archives = dict(gtsrb_archives(tmp_path), **{GTSRB_NAMES[0]: buf.getvalue()})
    else:
        archives = gtsrb_archives(tmp_path, extra={member: b"evil"})
    serve(server, monkeypatch, archives)
    to = tmp_path / "data" / "inner"
    code, _, err = run(capsys, "gtsrb", "--to", to, "--url-base", server.url)
    one_line_error(code, err, GTSRB_NAMES[0], repr(member), "refused the archive before unpacking anything")
    assert list(to.iterdir()) == []  # nothing unpacked, the archive deleted
    assert not (tmp_path / "data" / "evil.txt").exists() and not Path("/tmp/signlab-evil.txt").exists()


def test_http_404_and_no_server(tmp_path, server, monkeypatch, capsys):
    serve(server, monkeypatch, {})
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", server.url)
    one_line_error(code, err, f"{server.url}FullIJCNN2013.zip", "HTTP 404", "--url-base")
    closed = f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()  # nothing listens on that port now
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", closed)
    one_line_error(code, err, f"{closed}FullIJCNN2013.zip", "cannot connect", "check the network")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_target(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "gtsrb", "--to", tmp_path / "file" / "sub")
    one_line_error(code, err, "--to", "cannot write there")
    code, _, err = run(capsys, "gtsrb", "--to", tmp_path / "file")
    one_line_error(code, err, "--to", "is a file")
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        code, _, err = run(capsys, "gtsrb", "--to", tmp_path / "ro")
        one_line_error(code, err, "--to", "cannot write there")


def test_disk_full(tmp_path, server, monkeypatch, capsys):
    data = gtsdb_archive()
    serve(server, monkeypatch, {"FullIJCNN2013.zip": data})
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=100))
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", server.url)
    one_line_error(code, err, "needed to download", "free some space")
    monkeypatch.setattr(shutil, "disk_usage", real)
    if Path("/dev/full").exists():  # writes there fail with ENOSPC, as on a full disk
        (tmp_path / "FullIJCNN2013.zip.part").symlink_to("/dev/full")
        code, _, err = run(capsys, "gtsdb", "--to", tmp_path, "--url-base", server.url)
        one_line_error(code, err, "FullIJCNN2013.zip.part", "the disk is full")


def test_local_copy_through_a_folder_or_file_url(tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "FullIJCNN2013.zip").write_bytes(gtsdb_archive())
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path / "a", "--url-base", mirror)
    assert code == 0, err
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path / "b", "--url-base", mirror.as_uri())
    assert code == 0, err
    assert (tmp_path / "b" / "GTSDB" / "FullIJCNN2013" / "00899.ppm").is_file()


@pytest.mark.parametrize("argv, words", [
    (["nope"], ["DATASET", "nope: use one of gtsrb, gtsdb"]),
    (["gtsrb", "--url-base", "ftp://example.org/"], ["--url-base", "use an http://, https:// or file:// URL"]),
])
def test_bad_flags_are_one_line_exit_2(capsys, argv, words):
    code, _, err = run(capsys, *argv)
    one_line_error(code, err, *words)


def test_bad_mirror_in_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(dl.ENV_URL, "gopher://x/")
    code, _, err = run(capsys, "gtsdb", "--to", tmp_path)
    one_line_error(code, err, dl.ENV_URL, "gopher://x/")
