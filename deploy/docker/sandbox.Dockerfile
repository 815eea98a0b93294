# The sandbox image: `centaur` (the pod's command is its supervisor, `centaur sandbox
# supervise --pod`, which the server reaches with `centaur sandbox relay` through exec), the
# agent CLIs the harnesses run (the versions the tests pin in scripts/install-deps), a shell,
# git and Python. It holds no credential: every variable a CLI reads for one is a placeholder
# its gateway replaces on the wire.
#
#   docker build -f deploy/docker/sandbox.Dockerfile -t centaur-sandbox:dev .
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
FROM node:22-bookworm-slim
COPY --from=build /out/centaur /usr/local/bin/centaur
RUN apt-get update \
 && apt-get install -y --no-install-recommends git python3 python3-requests ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && npm install -g --no-audit --no-fund \
      @anthropic-ai/claude-code@2.1.197 @openai/codex@0.171.0 @mariozechner/pi-coding-agent@0.73.1 \
 && npm cache clean --force \
 && groupadd -g 1001 agent && useradd -u 1001 -g 1001 -d /home/agent -m agent
# The pod mounts the workspace, the home and /tmp writable; the rest is read-only.
USER 1001:1001
WORKDIR /workspace
