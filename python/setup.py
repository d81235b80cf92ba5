"""Packages rbfc with librbfc.so inside (rbfc/lib/librbfc.so): the library
named by $RBFC_LIBRARY, else the source tree's build/lib/librbfc.so, which
`scripts/build.sh rbfc_library` (and scripts/setup.sh) builds. The package
loads it with ctypes, so one wheel serves every Python 3 on Linux x86-64."""
import os
import shutil
from pathlib import Path

from setuptools import setup
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
        return "py3", "none", super().get_tag()[2]


setup(cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel})
