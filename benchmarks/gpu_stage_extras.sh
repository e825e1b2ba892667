#!/usr/bin/env bash
# For benchmarks/gpu_check.py on an offline GPU machine: the wheels its test-suite and --plot steps need, which
# the machine may lack. Run at the project's root after the staging that fills .gpu/c1 (the llama-cpp-python
# source, the base wheels, the first part of the model) and .gpu/c2 (the rest of the model):
#   - the test suite's wheels (pytest, hypothesis, httpx, llama-cpp-python's server...: about 7 MB) join
#     .gpu/c1/whl, which the build step installs into /tmp/site with the others;
#   - matplotlib and what it needs (about 24 MB) go to .gpu/c3/whl, a third upload (c1 and c2 are full), installed
#     there by: python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/c3/whl/*.whl
# Wheels are for CPython 3.12 on x86-64 Linux, as on the machine this was written for; numpy is the machine's own.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
[ -d .gpu/c1/whl ] || { echo "stage the build first: .gpu/c1/whl does not exist" >&2; exit 2; }
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
fetch() {  # fetch DEST PACKAGE...: the packages and their dependencies, less numpy and what c1 holds already
  local dest=$1 tmp; shift; tmp=$(mktemp -d)
  pip download -q "${platform[@]}" -d "$tmp" "$@"
  mkdir -p "$dest"
  for wheel in "$tmp"/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1)
    if [ "$name" != numpy ] && ! compgen -G ".gpu/c1/whl/$name-*" >/dev/null; then mv "$wheel" "$dest"/; fi
  done
  rm -rf "$tmp"
}
fetch .gpu/c1/whl pytest hypothesis httpx jinja2 uvicorn fastapi pydantic-settings sse-starlette \
  'starlette-context>=0.3.6,<0.4' PyYAML
fetch .gpu/c3/whl matplotlib
du -sh .gpu/c1 .gpu/c2 .gpu/c3
for dir in .gpu/c1 .gpu/c2 .gpu/c3; do
  [ "$(du -sm "$dir" | cut -f1)" -lt 62 ] || { echo "$dir is too big for one 64 MiB upload" >&2; exit 1; }
done
