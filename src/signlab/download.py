"""`signlab download gtsrb|gtsdb`: fetch the official archives, verify them, unpack them where signlab reads them.

- A transfer goes to NAME.part and continues with an HTTP Range request after an interruption (urllib only; it
  honours http_proxy/no_proxy). A server that ignores Range sends the whole file again, replacing the .part.
- A finished transfer is verified before anything is unpacked: GTSRB's archives by their published MD5s,
  GTSDB's (none is published) by its contents. A bad download is deleted.
- Every member name is checked before anything is written (no absolute paths, no `..`, no links); members go
  to a staging folder inside --to and then into place, so a failed archive leaves nothing.
- download.json beside the data records each archive's URL, size, MD5 and SHA-256; a re-run skips what it lists.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from signlab.errors import UserError

ENV_URL = "SIGNLAB_DOWNLOAD_URL"
TIMEOUT_S = 60.0  # per socket operation: a stalled server ends as an error instead of a hang
CHUNK = 1 << 20
AGAIN = "run the same command again"

# The published MD5s. Tests put their own small archives' sums in this table.
MD5 = {
    "GTSRB_Final_Training_Images.zip": "f33fd80ac59bff73c82d25ab499e03a3",
    "GTSRB_Final_Test_Images.zip": "c7e4e6327067d32654124b0fe9e82185",
    "GTSRB_Final_Test_GT.zip": "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
    # FullIJCNN2013.zip has none: no checksum is published, and the host could not be reached where this was
    # written, so no SHA-256 is pinned either. Its contents are checked instead (below), and the SHA-256 computed
    # on the user's machine is printed and recorded in GTSDB/download.json.
}
GTSDB_SCENES = 900  # 00000.ppm … 00899.ppm
GTSDB_GT_LINES = 1213  # one line per sign in gt.txt


def _gtsdb_contents(zf: zipfile.ZipFile) -> str | None:
    """What is wrong with a FullIJCNN2013.zip, or None: all scenes and a gt.txt of the published length."""
    names = set(zf.namelist())
    missing = [n for n in (f"FullIJCNN2013/{i:05d}.ppm" for i in range(GTSDB_SCENES)) if n not in names]
    if missing:
        return f"{len(missing)} of its {GTSDB_SCENES} scenes are missing (first {missing[0]})"
    if "FullIJCNN2013/gt.txt" not in names:
        return "it has no FullIJCNN2013/gt.txt"
    lines = [line for line in zf.read("FullIJCNN2013/gt.txt").decode("latin-1").splitlines() if line.strip()]
    if len(lines) != GTSDB_GT_LINES:
        return f"its gt.txt has {len(lines)} lines, expected {GTSDB_GT_LINES}"
    return None


@dataclass(frozen=True)
class Archive:
    name: str
    into: str  # folder under --to that the member paths are relative to
    proof: str  # a path under --to that exists once the archive is unpacked
    contents: Callable[[zipfile.ZipFile], str | None] | None = None  # the check where no checksum is published


@dataclass(frozen=True)
class Dataset:
    url: str
    folder: str  # under --to: the data and download.json
    archives: tuple[Archive, ...]
    next: Callable[[Path], str]  # the command to run next, given --to


def _gtsdb_next(root: Path) -> str:
    scenes = root / "GTSDB" / "FullIJCNN2013"
    if any(p.is_dir() and p.name.isdigit() for p in scenes.iterdir()):  # the ReadMe's per-class sign crops
        return f"signlab evaluate RUN --data {scenes} (its class folders hold the sign crops)"
    return f"signlab download gtsrb (signlab classifies signs; the scenes and gt.txt are in {scenes})"


DATASETS = {
    "gtsrb": Dataset("https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/", "GTSRB", (
        Archive("GTSRB_Final_Training_Images.zip", ".", "GTSRB/Final_Training/Images"),
        Archive("GTSRB_Final_Test_Images.zip", ".", "GTSRB/Final_Test/Images"),
        # GT-final_test.csv sits at this archive's root. Inside Images/ it is found by `--data GTSRB/Final_Test`.
        Archive("GTSRB_Final_Test_GT.zip", "GTSRB/Final_Test/Images", "GTSRB/Final_Test/Images/GT-final_test.csv"),
    ), lambda root: f"signlab train --data {root / 'GTSRB/Final_Training'}, "
                    f"then signlab evaluate RUN --data {root / 'GTSRB/Final_Test'}"),
    "gtsdb": Dataset("https://sid.erda.dk/public/archives/ff17dc924eba88d5d01a807357d6614c/", "GTSDB", (
        Archive("FullIJCNN2013.zip", "GTSDB", "GTSDB/FullIJCNN2013/gt.txt", _gtsdb_contents),
    ), _gtsdb_next),
}


def url_complaint(url: str) -> str | None:
    """Why a --url-base cannot be used, or None. A local folder counts: it becomes a file:// URL."""
    if urllib.parse.urlsplit(url).scheme in ("http", "https", "file") or Path(url).is_dir():
        return None
    return "use an http://, https:// or file:// URL, or a local folder"


def download(dataset: str, to: str | Path = "data", url_base: str | None = None,
             say: Callable[[str], None] = print) -> Path:
    """Fetch, verify and unpack a dataset (a DATASETS key) under `to`; return its folder. UserError on failure."""
    spec = DATASETS[dataset]
    root = _writable_folder(Path(to))
    base = _base_url(url_base, spec.url)
    receipt_path = root / spec.folder / "download.json"
    receipt = _read_receipt(receipt_path)
    for archive in spec.archives:
        if _unpacked(root, archive, receipt):
            say(f"{archive.name}: already downloaded and verified ({receipt_path}); skipping")
            continue
        url = base + archive.name
        path = _fetch(url, root / archive.name, say)
        record = _verify(path, archive, say)
        if path.suffix == ".part":  # verified: from now on a re-run unpacks it without downloading again
            path = path.replace(root / archive.name)
        count = _unpack(path, root, archive)
        say(f"{archive.name}: unpacked {count} entries into {root / archive.into}")
        receipt[archive.name] = {"url": url, **record, "unpacked_into": str(root / archive.into),
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_receipt(receipt_path, receipt)
        path.unlink()  # the data is unpacked and the receipt holds the checksums: the archive is not needed
        if MD5.get(archive.name) is None:
            say(f"{archive.name}: SHA-256 {record['sha256']} (computed here: no checksum is published for it; "
                f"recorded in {receipt_path})")
    say(f"next: {spec.next(root)}")
    return root / spec.folder


# ---------------------------------------------------------------- where to, from where


def _writable_folder(root: Path) -> Path:
    if root.exists() and not root.is_dir():
        raise UserError(f"--to {root}: is a file; pass --to with a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        raise UserError(f"--to {root}: cannot write there ({e.strerror or e}); pass --to with a folder you can "
                        f"write to") from None
    return root


def _base_url(given: str | None, default: str) -> str:
    from_env = os.environ.get(ENV_URL) or None
    base = given or from_env or default
    complaint = url_complaint(base)
    if complaint:
        raise UserError(f"{'--url-base' if given else ENV_URL} {base}: {complaint}")
    if not urllib.parse.urlsplit(base).scheme:
        base = Path(base).resolve().as_uri()
    return base if base.endswith("/") else base + "/"


def _read_receipt(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: the cost is downloading again
    return found if isinstance(found, dict) else {}


def _write_receipt(path: Path, receipt: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(receipt, indent=2) + "\n")
    tmp.replace(path)  # a kill mid-write leaves the previous receipt, never half of one


def _unpacked(root: Path, archive: Archive, receipt: dict) -> bool:
    done = receipt.get(archive.name)
    expected = MD5.get(archive.name)
    return (isinstance(done, dict) and (expected is None or done.get("md5") == expected)
            and (root / archive.proof).exists())


# ---------------------------------------------------------------- transfer


class _Dropped(Exception):  # the connection failed while the body was being read
    pass


def _fetch(url: str, dest: Path, say: Callable[[str], None]) -> Path:
    """The finished download of `url`: dest when a verified copy is already there, else the completed dest.part."""
    if dest.is_file():  # verified by an earlier run that did not finish unpacking it: verified again anyway
        say(f"{dest.name}: already downloaded; verifying it again")
        return dest
    part = dest.with_name(dest.name + ".part")
    for _ in range(2):  # a second request only after an unusable answer to Range, then without Range
        offset = part.stat().st_size if part.is_file() else 0
        if _transfer(url, part, offset, say):
            return part
    raise UserError(f"{url}: the server's answers cannot be used to download it; delete {part} and {AGAIN}")


def _open(url: str, offset: int):
    """The response to GET url (from byte `offset` on), or None for 416: the .part already holds the whole file."""
    headers = {"User-Agent": "signlab"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    mirror = f"pass --url-base (or set {ENV_URL}) with a mirror or a local copy"
    try:
        # A fresh opener reads the proxy settings of this moment.
        return urllib.request.build_opener().open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return None
        raise UserError(f"{url}: HTTP {e.code} {e.reason}; check the address, or {mirror}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, FileNotFoundError):  # a file:// mirror without this archive
            raise UserError(f"{url}: no such file; check the folder given as the mirror, or {mirror}") from None
        raise UserError(f"{url}: cannot connect ({reason}); check the network, or {mirror}") from None


def _transfer(url: str, part: Path, offset: int, say: Callable[[str], None]) -> bool:
    """One request into `part`. True when it holds the whole file; False when the server answered Range with
    another range (the .part is deleted, so the next request asks for all of it). UserError otherwise."""
    resp = _open(url, offset)
    if resp is None:
        return True
    with resp:
        status = getattr(resp, "status", None) or 200  # file:// answers carry no status
        if status == 206 and not re.match(rf"bytes {offset}-", resp.headers.get("Content-Range", "")):
            part.unlink()
            say(f"{part.name}: the server answered the resume request with another range; starting over")
            return False
        start = offset if status == 206 else 0
        if offset:
            say(f"{part.name}: " + (f"resuming at byte {start:,}" if start else
                                    "the server does not resume downloads; starting over"))
        length = resp.headers.get("Content-Length", "")
        total = start + int(length) if length.isdigit() else None
        if total is not None:
            _check_space(part.parent, total - start, f"download {url}")
        began = time.monotonic()
        try:
            with open(part, "ab" if start else "wb") as out:
                _copy(resp, out, part.name.removesuffix(".part"), start, total)
        except _Dropped as e:
            raise UserError(f"{url}: the transfer broke off at byte {part.stat().st_size:,} of {total or '?'} "
                            f"({e.__cause__}); {AGAIN} to resume") from None
        except OSError as e:
            raise _disk_error(part, e) from None
        except KeyboardInterrupt:
            say(f"{part.name}: interrupted at byte {part.stat().st_size:,}; {AGAIN} to resume")
            raise
    _received(url, part, start, total, time.monotonic() - began, say)
    return True


def _received(url: str, part: Path, start: int, total: int | None, seconds: float, say) -> None:
    """Check a finished transfer's size against the announced one and say how it went."""
    got = part.stat().st_size
    if total is not None and got < total:  # a server may close early without an error
        raise UserError(f"{url}: the connection closed at byte {got:,} of {total:,}; {AGAIN} to resume")
    if total is not None and got > total:
        part.unlink()
        raise UserError(f"{url}: received {got:,} bytes where {total:,} were announced; deleted {part.name}, {AGAIN}")
    rate = (got - start) / max(seconds, 1e-3)
    say(f"{url.rsplit('/', 1)[-1]}: {_mb(got)} downloaded ({_mb(got - start)} in {seconds:.0f} s, {_mb(rate)}/s)")


def _copy(resp, out, name: str, start: int, total: int | None) -> None:
    # On a terminal the bar shows size, rate and time left; a log gets _received's one line only.
    with tqdm(total=total, initial=start, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
              disable=not sys.stderr.isatty()) as bar:
        while True:
            try:
                chunk = resp.read(CHUNK)
            except (OSError, http.client.HTTPException) as e:  # reset, timeout, broken chunked encoding
                raise _Dropped() from e
            if not chunk:
                return
            out.write(chunk)  # an OSError here is the disk's, not the network's
            bar.update(len(chunk))


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _check_space(folder: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UserError(f"{folder}: {_mb(need)} needed to {what}, {_mb(free)} free; free some space or pass --to on "
                        f"another disk")


def _disk_error(path: Path, e: OSError) -> UserError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"{path}: the disk is full; free some space or pass --to on another disk, and {AGAIN}")
    return UserError(f"{path}: {e.strerror or e}; check the folder given with --to and {AGAIN}")


# ---------------------------------------------------------------- verify and unpack


def _hashes(path: Path) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def _verify(path: Path, archive: Archive, say: Callable[[str], None]) -> dict:
    """Checksums of a finished download; a download that fails its check is deleted (UserError)."""
    md5, sha256 = _hashes(path)
    expected = MD5.get(archive.name)
    complaint = f"MD5 {md5} does not match the published {expected}" if expected and md5 != expected else None
    if complaint is None:
        try:
            with zipfile.ZipFile(path) as zf:
                complaint = archive.contents(zf) if archive.contents else None
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            complaint = f"not a readable zip archive ({e})"
    if complaint:
        path.unlink()
        raise UserError(f"{archive.name}: {complaint}; deleted the bad download, {AGAIN} "
                        f"(or check the mirror given with --url-base/{ENV_URL})")
    say(f"{archive.name}: " + ("MD5 matches the published checksum" if expected
                               else "contents checked (no checksum is published for it)"))
    return {"bytes": path.stat().st_size, "md5": md5, "sha256": sha256,
            "verified": "published MD5" if expected else "contents (no checksum is published)"}


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be unpacked (zip-slip), or None."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "climbs out of the target folder (..)"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is not a plain file or folder"
    return None


def _unpack(path: Path, root: Path, archive: Archive) -> int:
    """Unpack into root/archive.into through a staging folder; return the number of members."""
    staging = root / f".{archive.name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that was killed
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            for info in members:  # every name first: a hostile archive writes nothing at all
                complaint = _unsafe(info)
                if complaint:
                    path.unlink()
                    raise UserError(f"{archive.name}: member {info.filename!r} {complaint}; refused the archive "
                                    f"before unpacking anything and deleted it, get it from the official address")
            _check_space(root, sum(i.file_size for i in members), f"unpack {archive.name}")
            for info in members:
                _extract(zf, info, staging)
        _merge(staging, root / archive.into)
    except (zipfile.BadZipFile, EOFError) as e:  # a member's CRC fails as it is read
        path.unlink()
        raise UserError(f"{archive.name}: damaged archive ({e}); deleted it, {AGAIN}") from None
    except OSError as e:
        raise _disk_error(staging, e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(members)


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path) -> None:
    dst = staging.joinpath(*(p for p in re.split(r"[/\\]", info.filename) if p not in ("", ".")))
    if info.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(dst, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def _merge(staging: Path, target: Path) -> None:
    """Move the staged tree into target, beside what is there (the test archive joins the training one)."""
    for folder, _, files in os.walk(staging):
        here = target / Path(folder).relative_to(staging)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(folder) / name, here / name)
