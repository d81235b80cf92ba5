"""Packages rbfc with librbfc.so inside (rbfc/lib/librbfc.so): the library
named by $RBFC_LIBRARY, else the source tree's build/lib/librbfc.so, which
`scripts/build.sh rbfc_library` (and scripts/setup.sh) builds. The package
loads it with ctypes, and rbfc._launcher (src/launcher.c, the forward call's
launch path) is built against Python's stable ABI and links nothing, so one
wheel serves every CPython >= 3.9 and every torch on Linux x86-64. It reads
include/rbfc/rbfc.h from $RBFC_INCLUDE, else the source tree's include/."""
import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def library():
    path = Path(os.environ.get("RBFC_LIBRARY")
                or HERE.parent / "build" / "lib" / "librbfc.so")
    if not path.is_file():
        raise SystemExit(f"rbfc: {path} does not exist: build it first "
                         "(scripts/build.sh rbfc_library) or set RBFC_LIBRARY")
    return path


def include_dir():
    path = Path(os.environ.get("RBFC_INCLUDE") or HERE.parent / "include")
    if not (path / "rbfc" / "rbfc.h").is_file():
        raise SystemExit(f"rbfc: {path}/rbfc/rbfc.h does not exist: set "
                         "RBFC_INCLUDE to the rbfc source tree's include/")
    return str(path)


LIMITED_API = ("Py_LIMITED_API", "0x03090000")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "rbfc" / "lib"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library(), target / "librbfc.so")


class PlatformWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        return "cp39", "abi3", super().get_tag()[2]


setup(cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel},
      ext_modules=[Extension("rbfc._launcher", ["src/launcher.c"],
                             include_dirs=[include_dir()],
                             define_macros=[LIMITED_API], py_limited_api=True,
                             extra_compile_args=["-O2", "-Wall", "-Werror"])])
