#!/bin/sh
# Runs as root inside `bentoml containerize`, after the Python packages are installed (bentofile.yaml
# docker.setup_script). Removes what the service never uses at run time. Deleting in a later layer
# shrinks the image only when the build squashes its layers: `make container` passes --opt squash.
#   - the C++ compiler, make and git that BentoML's Debian template installs for building packages from source
#     (every pinned package here is a wheel); the C compiler stays for the sparse engine's kernels;
#   - apt's package lists and uv's download cache (the venv keeps its own hard links);
#   - TensorFlow's C++ headers (for building custom ops) and libclang (TensorFlow's build-time
#     dependency), neither imported by `import tensorflow`.
set -eu
export DEBIAN_FRONTEND=noninteractive
# The C compiler stays: the service builds the sparse engine's kernels at its start, once, for the CPU it runs on
# (BentoML runs this script before the sources are in the image, so they cannot be built here).
apt-mark manual gcc gcc-12 cpp cpp-12 libgcc-12-dev libc6-dev linux-libc-dev binutils >/dev/null 2>&1 || true
# the toolchain goes by name too: a base image's own python3-pip would otherwise keep it (it recommends it)
remove=""
for package in build-essential git gnupg2 g++ make dpkg-dev g++-12 libstdc++-12-dev; do
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
command -v cc >/dev/null  # the compiler the service's start builds the kernels with
