# lustrekit: one static binary (share CLI, CSI driver, HSM mover), built against musl.
#
#   docker build -t lustrekit:dev .
#
# No protoc is needed: the CSI proto is compiled by protox inside the build.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lustrekit --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/lustrekit /lustrekit \
 && (ldd /lustrekit 2>&1 | grep -q "not a dynamic executable" || (echo "lustrekit is not static" >&2; exit 1))

# The runtime image keeps a shell and util-linux (mount/umount) for the `lustre` backend's
# client mounts; the Lustre client tools themselves (mount.lustre, lfs, lctl) and kernel modules
# come from the node (see the Helm chart's README notes). The `local` backend needs none of it.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux btrfs-progs openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /lustrekit /usr/local/bin/lustrekit
ENTRYPOINT ["/usr/local/bin/lustrekit"]
CMD ["--help"]
