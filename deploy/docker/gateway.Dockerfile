# The gateway image: `centaur-gateway`, one per sandbox (the Kubernetes backend) or as a
# shared egress gateway (deploy/charts/centaur-gateway).
#
#   docker build -f deploy/docker/gateway.Dockerfile -t centaur-gateway:dev .
#
# Not built or run on the development machines (no container engine there): see the
# README's known gaps.

# --- build ---------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gateway --bin centaur-gateway \
 && install -D -m 0755 target/release/centaur-gateway /out/centaur-gateway

# --- run -----------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and the CA certificates for upstream TLS; no shell. Runs as
# 65532; ports below 1024 come from the pod's net.ipv4.ip_unprivileged_port_start sysctl,
# not from a capability.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/centaur-gateway /usr/local/bin/centaur-gateway
USER 65532:65532
EXPOSE 1080 9090 9092
ENTRYPOINT ["/usr/local/bin/centaur-gateway"]
CMD ["run", "--config", "/etc/centaur/gateway/policy.yaml"]
