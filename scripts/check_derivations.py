#!/usr/bin/env python
"""Prove the derivations exact: run every manifest recipe on local snapshots of the real upstreams.

    python scripts/check_derivations.py MIRRORS [--only SUBSTRING]

MIRRORS holds one snapshot per upstream repository, `<owner>+<name>/repo` (a bare git directory,
or a checkout with its .git), as `fetch github:owner/name` leaves them. Files are read at the
pinned commit with `git show COMMIT:path`; nothing is copied into this repository. For each
manifest file the script prints OK (sha256 and size equal the manifest's), MISMATCH, or
UNAVAILABLE with the reason (repository or commit not in the snapshot, LFS content absent).
Exit status: 0 when every file is OK, 1 otherwise.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.derive import DERIVATIONS  # noqa: E402
from eval.fetch import LFS_POINTER, FetchError, archive_member, sha256_and_size  # noqa: E402
from eval.manifest import Upstream, load  # noqa: E402


class Unavailable(Exception):
    pass


class LazyFolder(Mapping):
    """{relative path: bytes} that reads a blob only when asked: snapshots may lack large unused blobs."""

    def __init__(self, paths: dict[str, str], read):
        self.paths, self.read = paths, read

    def __getitem__(self, key: str) -> bytes:
        return self.read(self.paths[key])

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


class GitUpstreams:
    def __init__(self, mirrors: Path):
        self.mirrors, self.batch = mirrors, {}

    def git_dir(self, repo: str) -> Path:
        base = self.mirrors / repo.replace("/", "+") / "repo"
        for d in (base / ".git", base):
            if (d / "HEAD").exists():
                return d
        raise Unavailable(f"{repo}: no snapshot under {self.mirrors}")

    def git(self, repo: str, *args: str) -> bytes:
        r = subprocess.run(["git", "--git-dir", str(self.git_dir(repo)), *args], capture_output=True)
        if r.returncode:
            raise Unavailable(f"{repo}: git {' '.join(args)[:80]}: {r.stderr.decode().strip()[:120]}")
        return r.stdout

    def has_commit(self, up: Upstream) -> None:
        try:
            self.git(up.repo, "cat-file", "-e", f"{up.commit}^{{commit}}")
        except Unavailable:
            raise Unavailable(f"{up.repo}: commit {up.commit[:12]} is not in the snapshot") from None

    def blob(self, up: Upstream, path: str) -> bytes:
        return self.checked(up, path, self.cat_file(up.repo, f"{up.commit}:{path}"))

    @staticmethod
    def checked(up: Upstream, name: str, data: bytes) -> bytes:
        if data.startswith(LFS_POINTER):
            raise Unavailable(f"{up.repo}: {name} is a Git LFS pointer and the snapshot has no LFS content")
        return data

    def cat_file(self, repo: str, name: str) -> bytes:
        """One `git cat-file --batch` per repository: folders hold tens of thousands of files."""
        if repo not in self.batch:
            self.batch[repo] = subprocess.Popen(["git", "--git-dir", str(self.git_dir(repo)), "cat-file", "--batch"],
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        proc = self.batch[repo]
        proc.stdin.write(name.encode() + b"\n")
        proc.stdin.flush()
        header = proc.stdout.readline().split()
        if len(header) != 3:
            raise Unavailable(f"{repo}: {name} is not in the snapshot ({b' '.join(header).decode()})")
        data = proc.stdout.read(int(header[2]))
        proc.stdout.read(1)  # the newline after each object
        return data

    def get(self, up: Upstream):
        self.has_commit(up)
        if up.path.endswith("/"):
            # "<mode> blob <sha>\t<path>" per file: blobs are then read by id, not by a path lookup each
            listing = self.git(up.repo, "ls-tree", "-r", "-z", up.commit, up.path).decode().split("\0")
            ids = {line.split("\t", 1)[1][len(up.path):]: line.split()[2] for line in listing if line}
            return LazyFolder(ids, lambda sha: self.checked(up, sha, self.cat_file(up.repo, sha)))
        if "!" in up.path:
            archive, member = up.path.split("!", 1)
            return archive_member(self.blob(up, archive), archive, member)
        return self.blob(up, up.path)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    mirrors, only = Path(argv[0]), argv[argv.index("--only") + 1] if "--only" in argv else ""
    upstreams, made, bad = GitUpstreams(mirrors), {}, 0
    for entry in load():
        if only not in entry.file:
            continue
        try:
            inputs = []
            for spec in entry.inputs:
                if spec.startswith("data:"):
                    name = spec[len("data:"):]
                    if name not in made:
                        raise Unavailable(f"input {name} was not made")
                    inputs.append(made[name])
                else:
                    inputs.append(upstreams.get(Upstream.parse(spec)))
            content = DERIVATIONS[entry.derivation](*inputs, **entry.options)
        except (Unavailable, FetchError) as e:
            print(f"UNAVAILABLE {entry.file}: {e}")
            bad += 1
            continue
        digest, size = sha256_and_size(content)
        if (digest, size) == (entry.sha256, entry.size):
            made[entry.file] = content
            print(f"OK          {entry.file} ({entry.derivation})")
        else:
            print(f"MISMATCH    {entry.file} ({entry.derivation}): expected {entry.sha256[:12]} {entry.size} B, "
                  f"made {digest[:12]} {size} B")
            bad += 1
    print(f"{len(made)} OK, {bad} not", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
