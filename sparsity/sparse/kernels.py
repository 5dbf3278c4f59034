"""The sparse engine's kernels: ``kernels.c``, built with the machine's C compiler and called through ctypes.

Why C (measured on this project's 2-core AMD EPYC with AVX-512, one thread, the default CNN's second
convolution: 535 nonzero inputs of 6,272, 64 output channels): the same gather written in numba 0.68 ran at
about 14 multiply-adds per ns whatever the loop form (numba cannot keep a 64-channel accumulator in
registers, so every multiply-add loads and stores its output), and the whole network at 57 us an image, no
faster than ONNX Runtime's dense 68 us. In C with GCC's vector extensions the accumulators stay in registers:
see the README's engine section for the figures.

**Building.** :func:`library` compiles ``kernels.c`` once per machine kind into a shared library named by
the hash of the source, the compiler flags and the instruction-set level (``x86-64-v4`` with AVX-512,
``v3`` with AVX2 and FMA, else the baseline), beside this file (``_build/``) or, where that is read-only, in
``SPARSE_KERNELS_DIR`` (default ``~/.cache/relu-sparsity/kernels``). A container build runs
``python -m sparsity.sparse.kernels --all`` while its compiler is still there, so the image carries every
level and chooses at start. Without a compiler and without a built library the engine is not available;
:class:`KernelsUnavailable` says why in one line and models keep their other engine.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

# step kinds and activations: the C enums, in order
CONV, MAXPOOL, AVGPOOL, ADD, ACT, AFFINE, PERMUTE = range(7)
NONE, RELU, CLIP, THRESHOLD = range(4)

FIELDS = (
    "op", "src", "dst", "res", "h", "w", "cin", "ho", "wo", "cout", "kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw",
    "groups", "weights", "bias", "act", "layer", "units", "unit_map", "extra", "cpad",
)  # fmt: skip
"""The integer fields of a step, in column order (the C enum of the same names)."""
F = {name: i for i, name in enumerate(FIELDS)}
LANES = 16
"""Weight rows are padded to a multiple of this many floats (one 512-bit vector)."""

SOURCE = Path(__file__).with_name("kernels.c")
LEVELS = {
    "x86-64-v4": ("avx512f", "avx512bw", "avx512dq", "avx512vl"),
    "x86-64-v3": ("avx2", "fma", "bmi2"),
    "x86-64": (),
}
"""The instruction-set levels built for x86-64, best first, with the CPU flags each needs."""
FLAGS = ("-O3", "-shared", "-fPIC", "-fno-math-errno", "-std=c11")


class KernelsUnavailable(RuntimeError):
    """The kernels cannot be built or loaded here: one line that says why."""


def cpu_level() -> str | None:
    """The best level this CPU runs (None off x86-64: the compiler's default target)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "x86-64"
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return next(level for level, needs in LEVELS.items() if flags.issuperset(needs))


def _name(level: str | None) -> str:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + str(level).encode()).hexdigest()[:16]
    return f"sparse-kernels-{level or platform.machine()}-{digest}.so"


def _directories() -> list[Path]:
    cache_dir = os.environ.get("SPARSE_KERNELS_DIR") or os.path.join(Path.home(), ".cache", "relu-sparsity", "kernels")
    return [SOURCE.parent / "_build", Path(cache_dir)]


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def build(level: str | None, directory: Path | None = None) -> Path:
    """Compile the kernels for ``level`` into ``directory`` (the first writable one by default); the file is
    written under a temporary name and renamed, so workers building at once never load half a file."""
    cc = compiler()
    if cc is None:
        raise KernelsUnavailable("no C compiler (cc, gcc or clang) to build the sparse kernels")
    for folder in [directory] if directory else _directories():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".so.tmp")
            os.close(handle)
        except OSError:
            continue
        target = folder / _name(level)
        command = [cc, *FLAGS, *([f"-march={level}"] if level else []), "-o", temporary, str(SOURCE), "-lm"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            os.unlink(temporary)
            lines = done.stderr.strip().splitlines() or ["no message"]
            first = next((line for line in lines if "error" in line), lines[0])
            raise KernelsUnavailable(f"the C compiler failed on the sparse kernels: {first[:200]}")
        os.replace(temporary, target)
        return target
    raise KernelsUnavailable(f"no writable folder for the sparse kernels ({', '.join(map(str, _directories()))})")


def runnable_levels() -> list[str | None]:
    """The levels this CPU runs, best first (``[None]`` off x86-64)."""
    best = cpu_level()
    if best is None:
        return [None]
    names = list(LEVELS)
    return names[names.index(best) :]


@cache
def library(level: str | None = "best") -> ctypes.CDLL:
    """The kernels for this CPU (or for ``level``, one of :func:`runnable_levels`), built first when no folder has
    them."""
    level = cpu_level() if level == "best" else level
    found = next((folder / _name(level) for folder in _directories() if (folder / _name(level)).is_file()), None)
    path = found or build(level)
    lib = ctypes.CDLL(str(path))
    lib.sparse_run.restype = ctypes.c_int64
    lib.sparse_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 3
    lib.sparse_abi.restype = ctypes.c_int64
    if lib.sparse_abi() != len(FIELDS):
        raise KernelsUnavailable(f"{path.name} has {lib.sparse_abi()} step fields, this code {len(FIELDS)}")
    return lib


class ProgramStruct(ctypes.Structure):
    """``program_t`` of kernels.c: a program's arrays and one thread's memory for it."""

    _fields_ = [
        ("code", ctypes.c_void_p), ("n_steps", ctypes.c_int64), ("fparams", ctypes.c_void_p),
        ("weights", ctypes.c_void_p), ("ints", ctypes.c_void_p), ("n_in", ctypes.c_int64), ("output", ctypes.c_int64),
        ("classes", ctypes.c_int64), ("softmax", ctypes.c_int64), ("n_units", ctypes.c_int64),
        ("n_layers", ctypes.c_int64), ("ws", ctypes.c_void_p), ("rows", ctypes.c_void_p), ("vals", ctypes.c_void_p),
        ("idx", ctypes.c_void_p), ("val", ctypes.c_void_p), ("cnt", ctypes.c_void_p), ("acc", ctypes.c_void_p),
        ("counts", ctypes.c_void_p), ("zeros", ctypes.c_void_p),
    ]  # fmt: skip


def available() -> str | None:
    """None when the kernels load here, else why not (one line)."""
    try:
        library()
    except (KernelsUnavailable, OSError) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m sparsity.sparse.kernels [--all]``: build the kernels for this CPU, or for every level (an
    image built on one machine and run on others)."""
    argv = sys.argv[1:] if argv is None else argv
    levels = list(LEVELS) if "--all" in argv and cpu_level() is not None else [cpu_level()]
    for level in levels:
        print(build(level, _directories()[0] if "--all" in argv else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
