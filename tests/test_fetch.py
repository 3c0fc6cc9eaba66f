"""`run.py data` without a network: a loopback HTTP server plays raw GitHub, the LFS media server and
the archive server, serving a small upstream tree made here."""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eval import fetch as F
from eval.manifest import Entry

COMMIT = "c" * 40
REPO = "owner/repo"
BIG = bytes(range(256)) * 400  # 100 KB: long enough to be cut in the middle of a transfer


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha(data)}\nsize {len(data)}\n".encode()


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


LFS_CONTENT = b"the real content, kept in Git LFS\n"
TREE = {  # the upstream repository at COMMIT
    "plain.txt": b"hello\n",
    "big.bin": BIG,
    "stored-in-lfs.txt": lfs_pointer(LFS_CONTENT),
    "table.tsv.gz": gzip.compress(b"a\tb\n"),
    "labels/cats.txt": b"tabby\nsiamese\n",
    "labels/dogs.txt": b"collie\n",
    "bundle.zip": zip_of({"inner.txt": b"inside\n"}),
}


def archive_of(tree: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for path, data in tree.items():
            info = tarfile.TarInfo(f"repo-{COMMIT}/{path}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Upstream:
    """What the server serves and how it misbehaves; `requests` logs (path, Range header)."""

    def __init__(self):
        self.routes = {f"/raw/{REPO}/{COMMIT}/{p}": d for p, d in TREE.items()}
        self.routes[f"/media/{REPO}/{COMMIT}/stored-in-lfs.txt"] = LFS_CONTENT
        self.routes[f"/archive/{REPO}/tar.gz/{COMMIT}"] = archive_of(TREE)
        self.cut_once: set[str] = set()  # paths whose first transfer stops half-way
        self.fail_with: dict[str, int] = {}  # path -> HTTP status
        self.requests: list[tuple[str, str | None]] = []


def make_handler(up: Upstream):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            up.requests.append((self.path, self.headers.get("Range")))
            if self.path in up.fail_with:
                self.send_error(up.fail_with[self.path])
                return
            data = up.routes.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if self.path in up.cut_once:
                up.cut_once.discard(self.path)
                self.wfile.write(data[start:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

    return Handler


@pytest.fixture
def upstream():
    up = Upstream()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(up))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    up.remote = F.Remote(raw=f"{base}/raw", media=f"{base}/media", archive=f"{base}/archive", retries=3, backoff=0,
                           timeout=10)
    yield up
    server.shutdown()
    server.server_close()


def entry(file: str, content: bytes, derivation: str, *inputs: str, **options) -> Entry:
    return Entry(file=file, sha256=sha(content), size=len(content), derivation=derivation, inputs=inputs,
                 licence="test", options=options)


def spec(path: str) -> str:
    return f"{REPO}@{COMMIT}:{path}"


def entries() -> list[Entry]:
    return [
        entry("a/plain.txt", b"hello\n", "copy", spec("plain.txt")),
        entry("a/big.bin.gz", BIG, "copy", spec("big.bin")),
        entry("a/lfs.txt", LFS_CONTENT, "copy", spec("stored-in-lfs.txt")),
        entry("a/table.tsv", b"a\tb\n", "gunzip", spec("table.tsv.gz")),
        entry("b/labels.tsv", b"label\ttext\ncats\ttabby\ncats\tsiamese\ndogs\tcollie\n", "labelled_lines", spec("labels/")),
        entry("b/inner.txt", b"inside\n", "copy", spec("bundle.zip!inner.txt")),
    ]


def fetch(tmp_path, upstream, items=None, **kw):
    return F.fetch(tmp_path, items or entries(), remote=upstream.remote, log=lambda m: None, stream=io.StringIO(), **kw)


def test_fetch_makes_every_file_verified_then_keeps_them(tmp_path, upstream):
    status = fetch(tmp_path, upstream)
    assert status == {e.file: "made" for e in entries()}
    assert (tmp_path / "a/plain.txt").read_bytes() == b"hello\n"
    assert gzip.decompress((tmp_path / "a/big.bin.gz").read_bytes()) == BIG  # .gz: stored compressed
    assert (tmp_path / "b/labels.tsv").read_bytes().startswith(b"label\ttext\ncats\ttabby")
    assert not (tmp_path / F.CACHE).exists()  # the downloads go once everything is verified
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".part"))]
    n = len(upstream.requests)
    assert fetch(tmp_path, upstream) == {e.file: "kept" for e in entries()}
    assert len(upstream.requests) == n  # nothing downloaded again


def test_lfs_pointer_is_replaced_by_its_content(tmp_path, upstream):
    fetch(tmp_path, upstream)
    assert (tmp_path / "a/lfs.txt").read_bytes() == LFS_CONTENT
    assert any(path.startswith("/media/") for path, _ in upstream.requests)


def test_lfs_content_that_does_not_match_its_pointer_is_an_error(tmp_path, upstream):
    upstream.routes[f"/media/{REPO}/{COMMIT}/stored-in-lfs.txt"] = b"something else\n"
    with pytest.raises(F.FetchError, match="LFS content does not match its pointer"):
        fetch(tmp_path, upstream, [entries()[2]])


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path, upstream):
    path = f"/raw/{REPO}/{COMMIT}/big.bin"
    upstream.cut_once.add(path)
    fetch(tmp_path, upstream, [entries()[1]])
    assert gzip.decompress((tmp_path / "a/big.bin.gz").read_bytes()) == BIG
    ranges = [r for p, r in upstream.requests if p == path]
    assert ranges == [None, f"bytes={len(BIG) // 2}-"]  # the second request asks only for the rest


def test_interrupted_fetch_goes_on_where_it_stopped(tmp_path, upstream):
    upstream.fail_with[f"/archive/{REPO}/tar.gz/{COMMIT}"] = 503
    with pytest.raises(F.FetchError, match="HTTP 503"):
        fetch(tmp_path, upstream)
    assert (tmp_path / "a/table.tsv").exists() and not (tmp_path / "b/labels.tsv").exists()
    del upstream.fail_with[f"/archive/{REPO}/tar.gz/{COMMIT}"]
    status = fetch(tmp_path, upstream)
    assert [status[e.file] for e in entries()] == ["kept"] * 4 + ["made"] * 2


def test_checksum_mismatch_names_the_file_and_writes_nothing(tmp_path, upstream):
    bad = entry("a/plain.txt", b"hello, world\n", "copy", spec("plain.txt"))
    with pytest.raises(F.FetchError) as e:
        fetch(tmp_path, upstream, [bad])
    message = str(e.value)
    assert "a/plain.txt" in message and bad.sha256 in message and sha(b"hello\n") in message and "6 bytes" in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and F.CACHE not in p.parts]


def test_a_wrong_file_already_there_is_made_again(tmp_path, upstream):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/plain.txt").write_bytes(b"stale\n")
    assert fetch(tmp_path, upstream, [entries()[0]]) == {"a/plain.txt": "made"}
    assert (tmp_path / "a/plain.txt").read_bytes() == b"hello\n"


def test_missing_upstream_file_is_an_error_naming_it(tmp_path, upstream):
    with pytest.raises(F.FetchError, match=r"owner/repo:nowhere.txt: not found upstream .*HTTP 404"):
        fetch(tmp_path, upstream, [entry("x.txt", b"", "copy", spec("nowhere.txt"))])


def test_server_error_is_retried_then_reported(tmp_path, upstream):
    path = f"/raw/{REPO}/{COMMIT}/plain.txt"
    upstream.fail_with[path] = 500
    with pytest.raises(F.FetchError, match="server error .*HTTP 500"):
        fetch(tmp_path, upstream, [entries()[0]])
    assert [p for p, _ in upstream.requests].count(path) == upstream.remote.retries


def test_command_fetches_writes_a_manifest_and_fails_with_exit_2(tmp_path, upstream, monkeypatch, capsys):
    import run
    from mltp.cli import data

    monkeypatch.setattr(data, "load", entries)
    base = upstream.remote.raw.rsplit("/", 1)[0]
    argv = ["data", "--to", str(tmp_path / "d"), "--raw-url", f"{base}/raw", "--media-url", f"{base}/media",
            "--archive-url", f"{base}/archive"]
    run.main(argv)
    from eval.manifest import parse_markdown
    rows = parse_markdown((tmp_path / "d/MANIFEST.md").read_text())
    assert sorted(r.file for r in rows) == sorted(e.file for e in entries())

    monkeypatch.setattr(data, "load", lambda: [entry("x.txt", b"", "copy", spec("nowhere.txt"))])
    with pytest.raises(SystemExit) as e:
        run.main(argv[:2] + [str(tmp_path / "e")] + argv[3:])
    assert e.value.code == 2
    assert "nowhere.txt: not found upstream" in capsys.readouterr().err


def test_data_dir_lookup_order(tmp_path, monkeypatch):
    import eval.tasks as T

    def staged(path: Path) -> Path:
        path.mkdir(parents=True)
        (path / "MANIFEST.md").write_text("# Data manifest\n")
        return path

    repo = tmp_path / "clone" / "mltp"
    monkeypatch.setattr(T, "REPO_ROOT", repo)
    monkeypatch.delenv("MLTP_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(FileNotFoundError, match="python run.py data"):
        T.resolve_data_dir()
    cache = staged(tmp_path / "xdg" / "mltp" / "data")
    assert T.user_data_dir() == cache and T.resolve_data_dir() == cache
    shared = staged(tmp_path / "clone" / "shared" / "data")
    assert T.resolve_data_dir() == shared
    env = staged(tmp_path / "env")
    monkeypatch.setenv("MLTP_DATA_DIR", str(env))
    assert T.resolve_data_dir() == env
    assert T.resolve_data_dir(cache) == cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert T.user_data_dir() == Path.home() / ".cache" / "mltp" / "data"


def test_main_job_without_data_names_the_command(tmp_path, monkeypatch, capsys):
    from mltp import cli
    from mltp.cli.settings import resolve

    monkeypatch.chdir(tmp_path)  # not in a checkout: no ../shared/data to find
    monkeypatch.delenv("MLTP_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(SystemExit) as e:
        resolve(cli.parse(["--device", "cpu"])[0], log=lambda m: None)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "python run.py data" in err and "--fetch-data" in err


def test_training_sources_without_files_are_named_and_left_out(tmp_path):
    from mltp.cli.job import sources_present
    from mltp.data.mixture import DEFAULT_SOURCES, SOURCES

    for name in DEFAULT_SOURCES:
        if name not in ("debian", "wordnet"):
            for f in SOURCES[name].files:
                (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / f).write_text("")
    present, absent = sources_present(str(tmp_path))
    assert absent == ["debian", "wordnet"] and present == [n for n in DEFAULT_SOURCES if n not in absent]
