"""Local runner for the Triton server at the end of the scoring graph (feature service -> Triton ensemble).

There is no Docker here, so the local/CI target runs the `tritonserver` binary that the nvidia-pytriton
wheel bundles (CPU only, Python backend only). This module finds that binary, lays out a writable backend
folder (the wheel keeps the Python backend and its per-Python-version stubs apart), builds the command line
and environment, and waits for readiness over gRPC.

`python -m services.ensemble.triton --model-repository DIR --work-dir DIR` replaces itself with
tritonserver (os.execve), so a supervisor that started it owns exactly one process to signal.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.ensemble.repository import ENSEMBLE_MODEL

_STUB_NAME = "triton_python_backend_stub"


class TritonNotFoundError(RuntimeError):
    """The nvidia-pytriton wheel (or the part of it this module needs) is not installed."""


@dataclass(frozen=True)
class TritonPaths:
    """Where the pieces of the bundled Triton live inside the installed nvidia-pytriton wheel."""

    binary: Path
    libs_dir: Path
    backends_src: Path
    stub: Path


def find_triton() -> TritonPaths:
    """Locate tritonserver, its shared libraries, the Python backend and the stub for this Python."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotFoundError(
            "nvidia-pytriton is not installed in this environment (pip install nvidia-pytriton==0.7.0); "
            "it provides the tritonserver binary used for the local target"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    server_dir = package_dir / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = TritonPaths(
        binary=server_dir / "bin" / "tritonserver",
        # auditwheel puts the binary's vendored .so files next to the package, not inside it.
        libs_dir=package_dir.parent / "nvidia_pytriton.libs",
        backends_src=server_dir / "backends",
        stub=server_dir / "python_backend_stubs" / version / _STUB_NAME,
    )
    missing = [
        f"{label}: {path}"
        for label, path in (
            ("tritonserver binary", paths.binary),
            ("bundled libraries", paths.libs_dir),
            ("python backend", paths.backends_src / "python" / "libtriton_python.so"),
            (f"python backend stub for Python {version}", paths.stub),
        )
        if not path.exists()
    ]
    if missing:
        raise TritonNotFoundError(
            f"incomplete nvidia-pytriton installation under {package_dir}: missing " + "; ".join(missing)
        )
    return paths


def _copy_if_changed(src: Path, dst: Path) -> None:
    if dst.exists():
        src_stat, dst_stat = src.stat(), dst.stat()
        if src_stat.st_size == dst_stat.st_size and int(src_stat.st_mtime) == int(dst_stat.st_mtime):
            return
    # Copy then rename: a stub already executing for a running server makes open-for-write fail with
    # ETXTBSY, while replacing the directory entry is allowed and leaves the running copy intact.
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def prepare_backends(work_dir: Path) -> Path:
    """Return `work_dir/backends`, holding `python/` = the wheel's Python backend plus this Python's stub.

    Idempotent and safe while another server uses the same folder. The wheel's own folder is never written:
    site-packages may be read-only and is shared by every environment user.
    """
    paths = find_triton()
    backends = Path(work_dir) / "backends"
    for src in paths.backends_src.rglob("*"):
        if "__pycache__" in src.parts or not src.is_file():
            continue
        dst = backends / src.relative_to(paths.backends_src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        _copy_if_changed(src, dst)
    stub = backends / "python" / _STUB_NAME
    _copy_if_changed(paths.stub, stub)
    stub.chmod(stub.stat().st_mode | 0o111)
    return backends


def triton_environment(paths: TritonPaths, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver: bundled libs on LD_LIBRARY_PATH, this interpreter's bin first on PATH.

    The Python-backend stub resolves its packages (numpy, onnxruntime) through the first `python3` on PATH,
    so the virtualenv's bin must win over the system one. sys.executable is not resolved on purpose: the
    venv's python is a symlink, and following it would land in the base interpreter without the packages.
    """
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(paths.libs_dir), env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), env.get("PATH", "")) if p)
    return env


def triton_command(
    model_repository: Path,
    work_dir: Path,
    *,
    grpc_port: int = 8001,
    http_port: int = 8000,
    metrics_port: int = 8002,
    extra_args: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """argv and full environment to start the local tritonserver on `model_repository`."""
    paths = find_triton()
    backends = prepare_backends(work_dir)
    argv = [
        str(paths.binary),
        f"--model-repository={Path(model_repository).resolve()}",
        f"--backend-directory={backends.resolve()}",
        # Explicit model control: every model of the repository at start, then only what the gateway's release
        # manager loads (a release's own model, beside the champion's) or unloads (a retired one).
        "--model-control-mode=explicit",
        "--load-model=*",
        # Not ready until every model is: the gateway must not route to a half-loaded ensemble.
        "--strict-readiness=true",
        "--log-verbose=0",
        # Loopback only: the feature service is the sole client and there is no auth in front of Triton.
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        *extra_args,
    ]
    return argv, triton_environment(paths)


async def wait_ready(url: str, timeout_s: float, *, alive: Callable[[], bool] | None = None) -> None:
    """Poll `url` (host:port, gRPC) until the server and `ENSEMBLE_MODEL` report ready.

    `alive`, when given, is checked between polls so a server that died during start fails fast instead
    of burning the whole timeout.
    """
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.utils import InferenceServerException

    deadline = time.monotonic() + timeout_s
    last_error = "not polled yet"
    client = grpcclient.InferenceServerClient(url)
    try:
        while True:
            if alive is not None and not alive():
                raise RuntimeError(f"Triton at {url} exited before becoming ready (last poll: {last_error})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"Triton at {url} not ready within {timeout_s:.1f}s (last poll: {last_error})"
                )
            per_call = max(0.1, min(2.0, remaining))
            try:
                if await client.is_server_ready(client_timeout=per_call):
                    if await client.is_model_ready(ENSEMBLE_MODEL, client_timeout=per_call):
                        return
                    last_error = f"server ready, {ENSEMBLE_MODEL} not ready"
                else:
                    last_error = "server not ready"
            except InferenceServerException as exc:
                last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.ensemble.triton",
        description="Exec the local tritonserver (nvidia-pytriton) on a model repository.",
    )
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True, help="writable folder for the backend copy")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("extra_args", nargs=argparse.REMAINDER, help="passed to tritonserver after `--`")
    args = parser.parse_args(argv)
    extra = args.extra_args[1:] if args.extra_args[:1] == ["--"] else args.extra_args
    command, env = triton_command(
        args.model_repository,
        args.work_dir,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        extra_args=extra,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
