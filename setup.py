"""Builds the native extensions ``optimizer._kernels`` and ``optimizer._runtime`` by driving CMake
(CMake is the source of truth for native code; this file only forwards ``CMAKE_ARGS``, as
pybind11's cmake_example)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(os.environ.get("EDGEOPT_BUILD_DIR", ROOT / "build" / "py"))
        build_dir.mkdir(parents=True, exist_ok=True)
        import pybind11

        args = [
            f"-DEDGEOPT_PYTHON_OUTPUT_DIR={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DEDGEOPT_BUILD_PYTHON=ON",
            "-DEDGEOPT_BUILD_TESTS=OFF",
            "-DEDGEOPT_BUILD_BENCH=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        try:
            import ninja  # noqa: F401

            args.append("-GNinja")
        except ImportError:
            pass
        args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        jobs = str(os.cpu_count() or 2)
        target = ext.name.rpartition(".")[2]
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--target", target, "-j", jobs], check=True
        )


setup(
    ext_modules=[CMakeExtension("optimizer._kernels"), CMakeExtension("optimizer._runtime")],
    cmdclass={"build_ext": CMakeBuild},
)
