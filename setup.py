"""Build hook: the detection hot path compiled to C extension modules with mypyc.

Everything else about the package is in pyproject.toml. The modules of
``node.detectors.hotpath.HOT_PATH`` are plain, type-hinted Python; mypyc compiles each to
an extension module of the same name, which Python imports in place of the ``.py`` file
(README, "Compiled hot path"). The build records the digest of every source it compiled
(``hotpath.STAMP``), so that a source edited later runs as written: see ``hotpath.py``.

Compiling is optional. Without a C compiler, or with ``OOB_NODE_PURE_PYTHON=1`` set at
install time, the package installs as pure Python and works the same, only slower.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# Loaded by path: importing the package would need its dependencies, absent at build time.
_spec = importlib.util.spec_from_file_location("hotpath", ROOT / "node/detectors/hotpath.py")
assert _spec is not None and _spec.loader is not None
hotpath = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hotpath)


class OptionalBuildExt(build_ext):
    """Builds the compiled hot path when it can, then its stamp. On a compiler error it
    removes whatever part was built (a module without the shared library it links to does
    not import) and leaves the pure Python modules in charge."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "pure Python"
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            self.warn(f"compiled hot path not built ({exc}); installing pure Python")
            return
        if self.extensions:
            target = ROOT if self.inplace else Path(self.build_lib)
            stamp = target / "node" / "detectors" / hotpath.STAMP
            stamp.write_text(json.dumps(hotpath.build_stamp(ROOT / "node" / "detectors")))


def ext_modules() -> list:
    if os.environ.get("OOB_NODE_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # a build without the build-system requirements (setup.py by hand)
        print("mypyc not available: installing pure Python", file=sys.stderr)
        return []
    # The build environment holds no dependency but the build tools: imports of other
    # packages are typed Any (mypyc then calls them as Python objects, as it would anyway),
    # and the modules outside the hot path are read for their types, not checked.
    options = ["--ignore-missing-imports", "--follow-imports=silent"]
    sources = [name.replace(".", "/") + ".py" for name in hotpath.HOT_PATH]
    # group_name: the shared library of the compiled modules is oob_node__mypyc, a name of
    # ours, instead of one made of a hash.
    return mypycify(options + sources, group_name="oob_node", opt_level="3")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
