# The control plane image: `centaur` (server, CLI, the per-sandbox supervisor).
#
#   docker build -f deploy/docker/centaur.Dockerfile -t centaur:dev .
#
# Not built or run on the development machines (no container engine there): see the
# README's known gaps.

# --- build ---------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p control --bin centaur \
 && install -D -m 0755 target/release/centaur /out/centaur

# --- run -----------------------------------------------------------------------------
# distroless/cc: glibc and libgcc only; no shell, no package manager. Runs as 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/centaur /usr/local/bin/centaur
USER 65532:65532
EXPOSE 8700
ENTRYPOINT ["/usr/local/bin/centaur"]
CMD ["server", "--config", "/etc/centaur/centaur.yaml"]
