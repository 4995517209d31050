"""Build hook: generate the gRPC/protobuf Python code from proto/ (never committed).

`proto/curator/v1/*.proto` is compiled into the package `curator_api.v1` (kept apart from the
hand-written `curator` package, whose name the proto path would otherwise collide with).
Runs on every build, including `pip install -e .`.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "proto" / "curator" / "v1"
OUT_PKG = "curator_api"


def generate() -> None:
    from grpc_tools import protoc  # build requirement (pyproject: build-system.requires)

    out = ROOT / OUT_PKG
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / OUT_PKG / "v1"
        staged.mkdir(parents=True)
        protos = sorted(PROTO_DIR.glob("*.proto"))
        for p in protos:
            text = re.sub(r'import "curator/v1/', f'import "{OUT_PKG}/v1/', p.read_text())
            (staged / p.name).write_text(text)
        for old in (out / "v1").glob("*_pb2*"):
            old.unlink()
        include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "protoc",
            f"-I{tmp}",
            f"-I{include}",
            f"--python_out={ROOT}",
            f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}",
        ]
        args += [str(staged / p.name) for p in protos]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {protos}")


class BuildPyWithProto(build_py):
    def run(self) -> None:
        generate()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProto})
