#!/usr/bin/env bash
# The wheels a GPU host lacks to run `python -m orchestrator ... --runner local --python current`, to carry there.
#
#   scripts/device-kit.sh OUT_DIR            (default OUT_DIR: .kit/, git-ignored, so it travels with the tree)
#   then, on the host:  python -m pip install --no-index --no-deps OUT_DIR/cp312/*.whl   (cp311/ for Python 3.11)
#
# A host with the frameworks installed typically has numpy, scipy, pandas, jinja2, rich, pyyaml, matplotlib (and
# with it packaging) and nvidia-ml-py, but not pydantic: the orchestrator imports pydantic unconditionally (matrix,
# frameworks, results); uv, the docker SDK, requests and ray are imported only by the runners that use them. The kit
# is pydantic and its dependencies for CPython 3.12 and 3.11 on x86_64 Linux, one complete folder per Python
# (pydantic_core is compiled per version, and one `pip install *.whl` refuses a wheel of another version), ~9 MB. tests/test_host_env.py proves it: a bare venv with only the host's packages plus this kit
# runs a cell through the orchestrator.
set -euo pipefail

out="${1:-.kit}"
python="${PYTHON:-python3}"
# Pinned (the versions the tests run with): pydantic_core must be the exact one this pydantic was released with.
pins=(
  "pydantic==2.13.4"
  "pydantic-core==2.46.4"
  "annotated-types==0.7.0"
  "typing-extensions==4.15.0"
  "typing-inspection==0.4.2"
)

for pyver in 3.12 3.11; do
  dest="$out/cp${pyver/./}"
  mkdir -p "$dest"
  "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    --python-version "$pyver" --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --dest "$dest" "${pins[@]}"
done
size_kb=$(du -sk "$out" | cut -f1)
if (( size_kb > 40 * 1024 )); then
  echo "device-kit: $out is ${size_kb} KB, over the 40 MB a carried folder may hold" >&2
  exit 1
fi
echo "device-kit: $(find "$out" -name '*.whl' | wc -l) wheels, ${size_kb} KB in $out;" \
  "on the host: python -m pip install --no-index --no-deps $out/cp3XX/*.whl (its Python's folder)"
