"""Put an adapter folder, with Curator's sources inside, into a harness checkout so that the
harness's own installer builds its image (the build context is the harness root, so
everything the Dockerfile copies must live inside it).

    python -m bench.harness.stage annb   /path/to/ann-benchmarks
    python -m bench.harness.stage bigann /path/to/big-ann-benchmarks

Writes <harness>/<place>/<folder>/ (the adapter files) and <folder>/curator-src/ (what
`pip install` needs: pyproject.toml, setup.py, README.md, proto/ and the packages; plus
bench-path/bench/harness/, put on PYTHONPATH by the image). Prints the install command.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HARNESSES", "Harness", "stage"]

ROOT = Path(__file__).resolve().parents[2]  # the Curator checkout
HERE = Path(__file__).resolve().parent
_SOURCES = ["pyproject.toml", "setup.py", "README.md", "proto", "curator", "curator_api"]
_SOURCES += ["server", "client"]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*_pb2.py", "*_pb2_grpc.py", "*_pb2.pyi")


@dataclass(frozen=True)
class Harness:
    """Where an adapter goes in a harness checkout and how the harness builds it."""

    folder: str  # our adapter folder (bench/harness/<folder>), kept as is in the harness
    place: str  # the harness's folder of algorithms, relative to its root
    marker: str  # a file only that harness's root has
    install: str  # the harness's install command for the adapter (run from its root)
    docker_tag: str  # the tag that command builds (= the adapter's config docker tag)

    @property
    def build(self) -> str:
        """The `docker build` the installer runs (context: the harness root)."""
        return f"docker build --rm -t {self.docker_tag} -f {self.place}/{self.folder}/Dockerfile ."


HARNESSES = {
    "annb": Harness(
        folder="annb_curator",
        place="ann_benchmarks/algorithms",
        marker="run_algorithm.py",
        install="python install.py --algorithm annb_curator",
        docker_tag="ann-benchmarks-annb_curator",
    ),
    "bigann": Harness(
        folder="bigann_curator",
        place="neurips23/filter",
        marker="run_algorithm.py",
        install="python install.py --neurips23track filter --algorithm bigann_curator",
        docker_tag="neurips23-filter-bigann_curator",
    ),
}


def stage(which: str, harness_root: str | Path, *, replace: bool = False) -> Path:
    """Copy the adapter and Curator's sources into the harness checkout; returns the staged
    adapter folder. Raises FileNotFoundError if `harness_root` is not that harness's checkout,
    FileExistsError if the folder is already there (unless `replace`)."""
    h = HARNESSES[which]
    root = Path(harness_root)
    if not (root / h.marker).is_file() or not (root / h.place).is_dir():
        raise FileNotFoundError(
            f"expected a {which} checkout (with {h.marker} and {h.place}/), got {root}"
        )
    dest = root / h.place / h.folder
    if dest.exists():
        if not replace:
            raise FileExistsError(f"expected no {dest} yet (pass --replace), got one")
        shutil.rmtree(dest)
    shutil.copytree(HERE / h.folder, dest, ignore=_IGNORE)
    src = dest / "curator-src"
    src.mkdir()
    for name in _SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=_IGNORE)
        else:
            shutil.copy2(ROOT / name, src / name)
    bench = src / "bench-path" / "bench"
    bench.mkdir(parents=True)
    shutil.copy2(ROOT / "bench" / "__init__.py", bench / "__init__.py")
    shutil.copytree(HERE, bench / "harness", ignore=_IGNORE)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("harness", choices=sorted(HARNESSES))
    ap.add_argument("root", help="the harness checkout")
    ap.add_argument("--replace", action="store_true", help="replace a staged adapter")
    args = ap.parse_args(argv)
    dest = stage(args.harness, args.root, replace=args.replace)
    h = HARNESSES[args.harness]
    print(f"staged {dest}\nnow, from {args.root}: {h.install}\n(it runs: {h.build})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
