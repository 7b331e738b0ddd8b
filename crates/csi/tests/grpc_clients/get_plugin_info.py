"""Calls /csi.v1.Identity/GetPluginInfo with Python grpcio over a plain `unix:` target.

No generated code: the request is an empty GetPluginInfoRequest (zero bytes) and the reply
is printed as hex for the caller to decode.

Usage: get_plugin_info.py SOCKET [AUTHORITY | --repeat=N]
AUTHORITY sets the `grpc.default_authority` channel option; --repeat=N makes N calls on one
channel, each with its own metadata (so the client's HPACK table keeps changing). Exit 0
with the (last) reply's hex on stdout, or exit 3 with `error CODE DETAILS`.
"""

import sys

import grpc


def main() -> int:
    socket = sys.argv[1]
    options = []
    repeat = 1
    for arg in sys.argv[2:]:
        if arg.startswith("--repeat="):
            repeat = int(arg.split("=", 1)[1])
        else:
            options.append(("grpc.default_authority", arg))
    with grpc.insecure_channel("unix:" + socket, options=options) as channel:
        call = channel.unary_unary("/csi.v1.Identity/GetPluginInfo")
        for i in range(repeat):
            try:
                reply = call(b"", timeout=30, metadata=[("x-call", f"call-{i}")])
            except grpc.RpcError as error:
                print(f"error {error.code().name} {error.details()} (call {i})")
                return 3
    print(reply.hex())
    return 0


if __name__ == "__main__":
    sys.exit(main())
