#!/usr/bin/env bash
# Packs what one GPU session needs into .gpu/{a,b,c} (git-ignored), for scripts/gpu_session.sh.
#
# The lent GPU machine reaches no package registry and no model hub, and each call to it carries
# at most 64 MiB (the ~3 MiB checkout included). What it needs is ~160 MiB: the 98 MB GGUF of the
# default model, the gguf wheel that converts it, and the 66 MB of benchmark files a quick-suite
# study opens. So it travels in three parts, one per call, and is joined in /tmp/stage there
# (a warm machine keeps it between calls):
#   a: the GGUF's first 60 MiB
#   b: the GGUF's rest, its sha256, the gguf wheel, the IMDB files (the largest data)
#   c: every other benchmark or training file the study opens, and MANIFEST.md
# Which data files: the list in scripts/gpu_files.txt, recorded by running the main job with the
# tiny test model under an audit hook (every file it opens under the data directory).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MLTP_DATA_DIR:-../shared/data}
GGUF=$(.venv/bin/python -c "from mltp.formats.gguf import packaged_gguf; print(packaged_gguf('smollm2-135m'))")
rm -rf .gpu && mkdir -p .gpu/a .gpu/b/data .gpu/b/whl .gpu/c/data
head -c $((60 * 1024 * 1024)) "$GGUF" > .gpu/a/gguf.part1
tail -c +$((60 * 1024 * 1024 + 1)) "$GGUF" > .gpu/b/gguf.part2
sha256sum "$GGUF" | cut -d' ' -f1 > .gpu/b/gguf.sha256
.venv/bin/pip download -q --no-deps --only-binary=:all: -d .gpu/b/whl "gguf==$(.venv/bin/pip show gguf | awk '/^Version/{print $2}')"
while read -r f; do
    case $f in classification/imdb/*) part=b ;; *) part=c ;; esac
    mkdir -p ".gpu/$part/data/$(dirname "$f")"
    cp "$DATA/$f" ".gpu/$part/data/$f"
done < scripts/gpu_files.txt
cp "$DATA/MANIFEST.md" .gpu/c/data/
# The code these parts go with: results record it (MLTP_GIT_REVISION in scripts/gpu_session.sh).
rev=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then rev="$rev+uncommitted"; fi
for part in a b c; do echo "$rev" > ".gpu/$part/REVISION"; done
du -sh .gpu/a .gpu/b .gpu/c
