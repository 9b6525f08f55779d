#!/usr/bin/env bash
# Download, on a machine with registry access, every wheel the GPU image lacks (bench/gpu/requirements-gpu.txt)
# for CPython 3.12 on x86-64 manylinux, plus a pure-Python wheel of deepspeed built here (PyPI has only its
# sdist), into one folder (default .whl/, ignored by git), then print the folder's total size: it travels
# to the GPU machine in the device tool's 64 MiB carry, next to the working tree.
#
#   bash bench/gpu/fetch_wheels.sh [DIR]            (from the repository root, with .venv active or not)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${1:-$repo/.whl}"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
deepspeed_version=0.19.8
mkdir -p "$dest"

# --no-deps: the requirements file is the whole set (the image supplies torch and the rest); one platform
# tag per manylinux generation so pip may pick whichever the project publishes.
"$python" -m pip download --dest "$dest" --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any \
    -r "$repo/bench/gpu/requirements-gpu.txt"

# deepspeed: built without its ops (DS_BUILD_OPS=0) and without build isolation (its setup.py wants torch
# importable, and the CPU torch of this venv is enough for a wheel that compiles nothing); the result is
# a py3-none-any wheel that runs on the GPU's Python 3.12.
if ! ls "$dest"/deepspeed-"$deepspeed_version"-*.whl >/dev/null 2>&1; then
    DS_BUILD_OPS=0 "$python" -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir "$dest" "deepspeed==$deepspeed_version"
fi

# What the device tool carries: the tracked working tree plus this folder, 64 MiB in all.
count="$(ls "$dest"/*.whl | wc -l)"
wheels="$(cat "$dest"/*.whl | wc -c)"
tree="$(git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 cat 2>/dev/null) | wc -c)"
mib() { echo "$(( $1 / 1024 / 1024 )).$(( $1 * 10 / 1024 / 1024 % 10 ))"; }
echo "$count wheels in $dest: $(mib "$wheels") MiB; with the tracked tree ($(mib "$tree") MiB): $(mib $(( wheels + tree ))) of 64 MiB"
if [ $(( wheels + tree )) -gt $(( 60 * 1024 * 1024 )) ]; then
    echo "fetch_wheels: over 60 MiB with the working tree; the device tool carries 64 MiB at most" >&2
    exit 1
fi
