"""Generates the Python stubs of `protos/` into `scoring/v1/` (run by `make protos`).

The stubs are checked in; `tests/unit/test_protos.py` regenerates them into a temporary folder and fails
when the checked-in copy differs, so a changed `.proto` cannot ship with stale stubs.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("scoring/v1/*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (from grpcio-tools) on every proto; returns the files written under out_dir."""
    import grpc_tools
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    package = out_dir / "scoring" / "v1"
    (package / "__init__.py").write_text('"""Generated from protos/scoring/v1 by `make protos`. Do not edit."""\n')
    return sorted(p for p in package.iterdir() if p.is_file())


def main() -> int:
    written = generate(ROOT)
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
