"""Make the benchmark data directory from its public sources, every file checked against the manifest.

    fetch(data_dir, entries=manifest.load(), remote=Remote()) -> {file: "kept" | "made"}

Each upstream file is read at its pinned commit from raw GitHub (`{raw}/{owner}/{repo}/{commit}/{path}`);
a folder from the repository's archive at that commit (`{archive}/{owner}/{repo}/tar.gz/{commit}`);
a file that turns out to be a Git LFS pointer from the media server (`{media}/{owner}/{repo}/{commit}/{path}`),
checked against the pointer's oid and size. The bases are parameters so the tests can point them
at a loopback server. Derived files are then made by eval.derive and every result is checked
against the manifest's sha256 and size before it is written (atomically: a crash leaves no half
file). A file already present and matching is kept, so a fetch that was cut off goes on where it
stopped; downloads in progress resume with an HTTP Range request.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .derive import DERIVATIONS
from .manifest import Entry, Upstream, load
from .textio import atomic_write

RAW = "https://raw.githubusercontent.com"
MEDIA = "https://media.githubusercontent.com/media"
ARCHIVE = "https://codeload.github.com"
CACHE = ".fetch"  # downloads in progress and upstream files, inside the data directory until the end
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\n"
CHUNK = 1 << 16


class FetchError(RuntimeError):
    """A download or a check failed; the message names the file and what was expected."""


@dataclass(frozen=True)
class Remote:
    raw: str = RAW
    media: str = MEDIA
    archive: str = ARCHIVE
    retries: int = 3  # attempts per download; each one resumes where the last stopped
    backoff: float = 2.0  # seconds before the second attempt, doubled for each later one
    timeout: float = 60.0


def sha256_and_size(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), len(data)


def stored_content(path: Path) -> bytes:
    """A data file's verified content: gunzipped when the name ends in .gz."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def check(entry: Entry, content: bytes) -> None:
    digest, size = sha256_and_size(content)
    if (digest, size) != (entry.sha256, entry.size):
        raise FetchError(f"{entry.file}: checksum mismatch: expected sha256 {entry.sha256} and {entry.size} bytes, "
                         f"found sha256 {digest} and {size} bytes")


def is_verified(path: Path, entry: Entry) -> bool:
    if not path.is_file():
        return False
    try:
        return sha256_and_size(stored_content(path)) == (entry.sha256, entry.size)
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


class Progress:
    """One line on stderr per download: bytes so far, of how many, and a bar when the size is known."""

    def __init__(self, label: str, total: int | None, stream=sys.stderr, width: int = 30):
        self.label, self.total, self.stream, self.width = label, total, stream, width
        self.done, self.last = 0, 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last > 0.2:
            self.last = now
            self.draw("\r")

    def draw(self, end: str) -> None:
        mb = f"{self.done / 1e6:7.1f} MB"
        if self.total:
            filled = int(self.width * min(self.done / self.total, 1.0))
            bar = f" [{'#' * filled}{'.' * (self.width - filled)}] of {self.total / 1e6:.1f} MB"
        else:
            bar = ""
        self.stream.write(f"{end}  {self.label[-50:]:50s} {mb}{bar}")
        self.stream.flush()

    def close(self) -> None:
        self.draw("\r")
        self.stream.write("\n")


def download(url: str, dest: Path, remote: Remote, label: str, stream=sys.stderr) -> Path:
    """GET url into dest, resuming a partial dest.part with a Range request; dest appears only when whole."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error = None
    for attempt in range(remote.retries):
        if attempt:
            time.sleep(remote.backoff * 2 ** (attempt - 1))
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=remote.timeout) as response:
                resumed = response.status == 206
                length = response.headers.get("Content-Length")
                total = (int(length) + (have if resumed else 0)) if length else None
                progress = Progress(label, total, stream)
                progress.done = have if resumed else 0
                with open(part, "ab" if resumed else "wb") as f:
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        progress.update(len(chunk))
                progress.close()
                if total is not None and part.stat().st_size != total:
                    raise FetchError(f"{url}: transfer cut off at {part.stat().st_size} of {total} bytes")
            part.replace(dest)
            return dest
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the part is already whole
                part.replace(dest)
                return dest
            if e.code == 404:
                raise FetchError(f"{label}: not found upstream ({url}: HTTP 404)") from None
            kind = "server error" if e.code >= 500 else "refused"
            last_error = FetchError(f"{label}: {kind} ({url}: HTTP {e.code} {e.reason})")
            if e.code < 500:
                raise last_error from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, FetchError) as e:
            last_error = FetchError(f"{label}: download failed ({url}): {e}")
    raise last_error


class Upstreams:
    """Upstream files at their pinned commits, over HTTP, cached under `cache` for the fetch's length."""

    def __init__(self, cache: Path, remote: Remote = Remote(), stream=sys.stderr):
        self.cache, self.remote, self.stream = Path(cache), remote, stream

    def get(self, up: Upstream):
        """bytes for a file or an archive member, {relative path: bytes} for a folder."""
        if up.path.endswith("/"):
            return self.folder(up)
        if "!" in up.path:
            archive, member = up.path.split("!", 1)
            return archive_member(self.file(Upstream(up.repo, up.commit, archive)), archive, member)
        return self.file(up)

    def file(self, up: Upstream) -> bytes:
        dest = self.cache / up.repo / up.commit / up.path
        if not dest.exists():
            download(f"{self.remote.raw}/{up.repo}/{up.commit}/{up.path}", dest, self.remote, f"{up.repo}:{up.path}", self.stream)
        return self.resolve_lfs(up, dest.read_bytes())

    def resolve_lfs(self, up: Upstream, data: bytes) -> bytes:
        if not data.startswith(LFS_POINTER):
            return data
        fields = dict(line.split(" ", 1) for line in data.decode().splitlines() if " " in line)
        oid, size = fields["oid"].removeprefix("sha256:"), int(fields["size"])
        dest = self.cache / "lfs" / oid
        if not dest.exists():
            download(f"{self.remote.media}/{up.repo}/{up.commit}/{up.path}", dest, self.remote, f"{up.repo}:{up.path} (LFS)", self.stream)
        content = dest.read_bytes()
        if sha256_and_size(content) != (oid, size):
            dest.unlink()
            raise FetchError(f"{up.repo}:{up.path}: Git LFS content does not match its pointer (oid {oid}, {size} bytes)")
        return content

    def folder(self, up: Upstream) -> dict[str, bytes]:
        dest = self.cache / up.repo / f"{up.commit}.tar.gz"
        if not dest.exists():
            download(f"{self.remote.archive}/{up.repo}/tar.gz/{up.commit}", dest, self.remote, f"{up.repo} (archive)", self.stream)
        files = {}
        with tarfile.open(dest, "r:gz") as tar:
            for member in tar:
                # GitHub archives hold one top folder, <name>-<commit>/; paths are relative to the repository.
                path = member.name.split("/", 1)[1] if "/" in member.name else ""
                if member.isfile() and path.startswith(up.path):
                    rel = path[len(up.path):]
                    files[rel] = self.resolve_lfs(Upstream(up.repo, up.commit, path), tar.extractfile(member).read())
        if not files:
            raise FetchError(f"{up}: no files under this folder in the archive")
        return files


def archive_member(data: bytes, archive: str, member: str) -> bytes:
    try:
        if archive.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                return z.read(member)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except KeyError:
        raise FetchError(f"{archive}: has no member {member}") from None


def make(entry: Entry, upstreams, data_dir: Path) -> bytes:
    """The entry's content, derived from its inputs and checked against the manifest."""
    inputs = []
    for spec in entry.inputs:
        if spec.startswith("data:"):
            inputs.append(stored_content(data_dir / spec[len("data:"):]))
        else:
            inputs.append(upstreams.get(Upstream.parse(spec)))
    content = DERIVATIONS[entry.derivation](*inputs, **entry.options)
    check(entry, content)
    return content


def write(path: Path, content: bytes) -> None:
    """Atomically, with eval's own writer (eval/textio.py: eval imports nothing from mltp)."""
    def body(f) -> None:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as z:  # mtime 0: the same bytes on every machine
                z.write(content)
        else:
            f.write(content)
    atomic_write(path, body)


def fetch(data_dir: str | Path, entries: list[Entry] | None = None, remote: Remote = Remote(),
          log: Callable[[str], None] = print, stream=sys.stderr, keep_cache: bool = False) -> dict[str, str]:
    """Make every manifest file in data_dir; {file: "kept" (already verified) or "made"}. Raises FetchError."""
    data_dir = Path(data_dir)
    entries = load() if entries is None else entries
    upstreams = Upstreams(data_dir / CACHE, remote, stream)
    status = {}
    for i, entry in enumerate(entries, 1):
        target = data_dir / entry.file
        if is_verified(target, entry):
            status[entry.file] = "kept"
            continue
        log(f"[{i}/{len(entries)}] {entry.file} ({entry.derivation})")
        write(target, make(entry, upstreams, data_dir))
        status[entry.file] = "made"
    if not keep_cache:
        shutil.rmtree(data_dir / CACHE, ignore_errors=True)
    return status
