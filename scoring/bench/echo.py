"""A gRPC echo of the Gateway API for `scoring bench`'s ceilings: `python -m scoring.bench.echo --port N`.

Same messages, same Python grpc.aio server stack (`GrpcServer`, health included) as the gateway, but no work
behind it: every event is answered at once with a fixed response. What the load generator reaches against it is
the most any Python gRPC service on this machine could answer, whatever the scoring behind it costs.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import grpc

from scoring.common.server import GrpcServer, run_service
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2


def _echo(tx: types_pb2.Transaction) -> types_pb2.ScoreResponse:
    return types_pb2.ScoreResponse(
        transaction_id=tx.transaction_id, score=0.0, stage=types_pb2.STAGE_FILTER, model_version="echo:1"
    )


class EchoGateway(gateway_pb2_grpc.GatewayServicer):
    async def Score(
        self, request: gateway_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.ScoreResponse:
        return _echo(request.transaction)

    async def ScoreStream(
        self, request_iterator: AsyncIterator[gateway_pb2.ScoreRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[types_pb2.ScoreResponse]:
        async for request in request_iterator:
            yield _echo(request.transaction)

    async def ScoreBatchStream(
        self, request_iterator: AsyncIterator[gateway_pb2.ScoreBatchRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ScoreBatchResponse]:
        async for request in request_iterator:
            yield gateway_pb2.ScoreBatchResponse(responses=[_echo(tx) for tx in request.transactions])


async def serve(port: int) -> None:
    name = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
    server = GrpcServer(
        "bench_echo",
        f"127.0.0.1:{port}",
        [(EchoGateway(), gateway_pb2_grpc.add_GatewayServicer_to_server, name)],
        grace_s=1.0,
    )
    await server.serve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run_service(lambda: serve(args.port))


if __name__ == "__main__":
    main()
