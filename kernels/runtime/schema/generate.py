"""Regenerates the checked-in FlatBuffers code of the .eom schema with flatc (Debian's 2.0.8).

Writes kernels/runtime/schema/eom_generated.h (C++) and optimizer/export/eom_fbs.py (Python, one
file, marked so that ruff neither lints nor reformats it). Builds need no flatc: run this after
editing eom.fbs (``python kernels/runtime/schema/generate.py``); tests/test_runtime_format.py
regenerates into a temporary folder and checks the checked-in files match.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "kernels" / "runtime" / "schema" / "eom.fbs"
CPP_OUT = ROOT / "kernels" / "runtime" / "schema" / "eom_generated.h"
PY_OUT = ROOT / "optimizer" / "export" / "eom_fbs.py"
PY_HEADER = (
    "# ruff: noqa\n"
    "# fmt: off\n"
    "# Generated from kernels/runtime/schema/eom.fbs by kernels/runtime/schema/generate.py "
    "(flatc {version}); do not edit.\n"
)


def flatc_version(flatc: str) -> str:
    out = subprocess.run([flatc, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().split()[-1]


def generate(out_dir: Path, flatc: str = "flatc") -> tuple[Path, Path]:
    """Runs flatc on the schema; returns the (C++ header, Python module) written in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [flatc, "--cpp", "--python", "--gen-onefile", "-o", tmp, str(SCHEMA)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        cpp = out_dir / CPP_OUT.name
        shutil.copyfile(Path(tmp) / "eom_generated.h", cpp)
        py = out_dir / PY_OUT.name
        body = (Path(tmp) / "eom_generated.py").read_text()
        py.write_text(PY_HEADER.format(version=flatc_version(flatc)) + body.rstrip() + "\n")
    return cpp, py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flatc", default="flatc")
    parser.add_argument("--out", type=Path, help="write here instead of the checked-in places")
    args = parser.parse_args()
    if args.out:
        generate(args.out, args.flatc)
        return
    cpp, py = generate(Path(tempfile.mkdtemp()), args.flatc)
    shutil.copyfile(cpp, CPP_OUT)
    shutil.copyfile(py, PY_OUT)
    print(f"wrote {CPP_OUT.relative_to(ROOT)} and {PY_OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
