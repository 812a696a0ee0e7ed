"""A local OTLP trace receiver: OTLP/gRPC (our services) and OTLP/HTTP (Triton) in, OTLP/JSON lines out.

Where no Jaeger or OpenTelemetry collector runs (this machine, CI, a laptop without Docker), the local stack
points every exporter here and `scoring budget` reads the file. It speaks the real protocol, built from the
`opentelemetry-proto` trace service, so the services export exactly as they would to a collector; the tests
use it as the receiver that checks what the services send.

The file holds one `ExportTraceServiceRequest` per line in OTLP/JSON (ids in hex, as the OTLP specification
and the collector's file exporter write them).

    python -m scoring.trace_sink --grpc-port 4317 --http-port 4318 --out spans.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

log = logging.getLogger(__name__)
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


@dataclass(frozen=True)
class Span:
    """One received span, flattened with its service's name."""

    service: str
    name: str
    trace_id: str  # hex
    span_id: str  # hex
    parent_span_id: str  # hex, "" for a root
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[str, ...]  # span ids (hex) this span links to

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _hex_ids(node: Any) -> Any:
    """protobuf's JSON writes bytes in base64; OTLP/JSON wants trace and span ids in hex."""
    if isinstance(node, dict):
        return {
            k: (base64.b64decode(v).hex() if k in _ID_KEYS and isinstance(v, str) else _hex_ids(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def _b64_ids(node: Any) -> Any:
    """The reverse, for OTLP/JSON that comes in (Triton's exporter sends JSON): hex ids to protobuf's base64."""
    if isinstance(node, dict):
        return {
            k: (base64.b64encode(bytes.fromhex(v)).decode() if k in _ID_KEYS and isinstance(v, str) else _b64_ids(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_b64_ids(v) for v in node]
    return node


def to_otlp_json(request: trace_service_pb2.ExportTraceServiceRequest) -> dict[str, Any]:
    return _hex_ids(json_format.MessageToDict(request))  # type: ignore[no-any-return]


def _value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def spans_of(document: dict[str, Any]) -> Iterator[Span]:
    """The spans of one OTLP/JSON export request."""
    for resource_spans in document.get("resourceSpans", []):
        resource = {a["key"]: _value(a["value"]) for a in resource_spans.get("resource", {}).get("attributes", [])}
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for s in scope_spans.get("spans", []):
                yield Span(
                    service=service,
                    name=s.get("name", ""),
                    trace_id=s.get("traceId", ""),
                    span_id=s.get("spanId", ""),
                    parent_span_id=s.get("parentSpanId", ""),
                    start_ns=int(s.get("startTimeUnixNano", 0)),
                    end_ns=int(s.get("endTimeUnixNano", 0)),
                    attributes={a["key"]: _value(a["value"]) for a in s.get("attributes", [])},
                    links=tuple(link.get("spanId", "") for link in s.get("links", [])),
                )


def read_spans(path: Path) -> list[Span]:
    spans: list[Span] = []
    with open(path) as f:
        for line in f:
            if line.strip():
                spans.extend(spans_of(json.loads(line)))
    return spans


class TraceSink:
    """Receives OTLP traces over gRPC and HTTP; keeps them in memory and/or appends them to a file."""

    def __init__(self, out: Path | None = None, *, host: str = "127.0.0.1", grpc_port: int = 0,
                 http_port: int = 0, keep: bool = True) -> None:
        self.out = out
        self.host = host
        self.keep = keep
        self._grpc_port = grpc_port
        self._http_port = http_port
        self._lock = threading.Lock()
        self._documents: list[dict[str, Any]] = []
        self._file: TextIO | None = None
        self._server: grpc.aio.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/v1/traces"

    def receive(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        document = to_otlp_json(request)
        with self._lock:
            if self.keep:
                self._documents.append(document)
            if self._file is not None:
                self._file.write(json.dumps(document, separators=(",", ":")) + "\n")
                self._file.flush()

    def spans(self) -> list[Span]:
        with self._lock:
            documents = list(self._documents)
        return [span for d in documents for span in spans_of(d)]

    async def start(self) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.out, "a")  # noqa: SIM115 (closed in stop)
        sink = self

        class _Service(trace_service_pb2_grpc.TraceServiceServicer):
            async def Export(  # noqa: N802 (the proto's name)
                self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
            ) -> trace_service_pb2.ExportTraceServiceResponse:
                sink.receive(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(), self._server)
        self.grpc_port = self._server.add_insecure_port(f"{self.host}:{self._grpc_port}")
        await self._server.start()

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_error(404, "OTLP/HTTP traces are taken on /v1/traces")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = trace_service_pb2.ExportTraceServiceRequest()
                try:
                    if "json" in self.headers.get("Content-Type", ""):
                        json_format.ParseDict(_b64_ids(json.loads(body)), request)
                    else:
                        request.ParseFromString(body)
                except Exception as exc:  # a malformed export is the sender's error, not a crash of ours
                    self.send_error(400, f"not an ExportTraceServiceRequest: {exc}")
                    return
                sink.receive(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                pass

        self._http = ThreadingHTTPServer((self.host, self._http_port), _Handler)
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0.5)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    async def __aenter__(self) -> TraceSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(args: argparse.Namespace) -> None:
    sink = TraceSink(args.out, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port, keep=False)
    await sink.start()
    print(f"trace sink: OTLP/gRPC {sink.grpc_endpoint}, OTLP/HTTP {sink.http_url}, writing {args.out}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scoring.trace_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=4317)
    parser.add_argument("--http-port", type=int, default=4318)
    parser.add_argument("--out", type=Path, required=True)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
