#!/bin/sh
# Runs as root inside `bentoml containerize`, after the Python packages are installed (bentofile.yaml
# docker.setup_script). Builds the sparse engine's kernels, then removes what the service never uses at run time. Deleting in a later layer
# shrinks the image only when the build squashes its layers: `make container` passes --opt squash.
#   - the compilers and git that BentoML's Debian template installs for building packages from source
#     (every pinned package here is a wheel);
#   - apt's package lists and uv's download cache (the venv keeps its own hard links);
#   - TensorFlow's C++ headers (for building custom ops) and libclang (TensorFlow's build-time
#     dependency), neither imported by `import tensorflow`.
set -eu
export DEBIAN_FRONTEND=noninteractive
# the sparse engine's C kernels, for every instruction-set level (the image may run on another CPU than the one
# that built it), while the compiler is still here: a worker then loads them at start
(cd "${BENTO_PATH:-/home/bentoml/bento}/src" && /app/.venv/bin/python -m sparsity.sparse.kernels --all)
# the toolchain goes by name too: a base image's own python3-pip would otherwise keep it (it recommends it)
remove=""
for package in build-essential git gnupg2 gcc g++ cpp make dpkg-dev gcc-12 g++-12 cpp-12 libgcc-12-dev \
  libstdc++-12-dev libc6-dev linux-libc-dev; do
  if dpkg -s "$package" >/dev/null 2>&1; then remove="$remove $package"; fi
done
# shellcheck disable=SC2086  # one word per package
[ -z "$remove" ] || apt-get purge -y -qq --auto-remove -o APT::AutoRemove::RecommendsImportant=false $remove >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /root/.cache /tmp/*
site=$(/app/.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$site/tensorflow/include" "$site/clang" "$site"/libclang-*.dist-info
# nothing the service imports may be gone: import what a worker imports (TensorFlow and Keras where the image
# has them: the ONNX image, bentofile-onnx.yaml, has not)
/app/.venv/bin/python -c '
import importlib, importlib.util
modules = ["sklearn", "skops.io", "bentoml", "PIL", "uvloop", "httptools", "orjson", "onnx", "onnxruntime"]
modules += ["tensorflow", "keras"] if importlib.util.find_spec("tensorflow") else []
for module in modules:
    importlib.import_module(module)
'
# and the kernels load without the compiler
(cd "${BENTO_PATH:-/home/bentoml/bento}/src" && /app/.venv/bin/python -c 'from sparsity.sparse.kernels import library; library()')
