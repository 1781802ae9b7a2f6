# The images of the voting app: one target per service, all built from one compilation.
#
#   docker build --target vote -t voting-vote .      # also: result, worker, loadgen, nginx
#   docker buildx build --platform linux/amd64,linux/arm64 --target vote -t voting-vote .
#
# docker-compose.yml builds them (`docker compose build vote`). The Rust stages run on the
# build machine's own platform and cross-compile for the target one, so an arm64 image builds
# on an amd64 machine (and back) without emulation. cargo-chef keeps the dependencies in a
# layer of their own, built once for every service and rebuilt only when Cargo.lock or a
# manifest changes. The service images are distroless (glibc, CA certificates, no shell), run
# as the numeric user 65532, and check their health with the binary itself: `vote healthcheck`
# asks GET /readyz of the configured port (`VOTING_LISTEN`) and exits 0 or 1.
#
# Every image this file does not build comes from a build argument whose default is the official
# image: RUST_IMAGE (the compiler), RUNTIME_IMAGE (under the services) and NGINX_IMAGE. Point
# them at a registry mirror, or at the offline stand-ins of scripts/stand-in-images, e.g.
#
#   docker build --build-arg RUST_IMAGE=mirror.example/library/rust:1.95.0-slim-trixie .
#
# (docker-compose.yml passes the variables of the same names through.) The Rust image's version
# is the channel of rust-toolchain.toml (scripts/check-deploy checks). No `# syntax=` line: the
# builder's own Dockerfile frontend is enough, and nothing has to be pulled for it.
ARG RUST_IMAGE=rust:1.95.0-slim-trixie
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian13:nonroot
ARG NGINX_IMAGE=nginxinc/nginx-unprivileged:1.30.4-alpine

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS chef
# The toolchain of the image, whatever rust-toolchain.toml lists besides (rustfmt, clippy).
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TERM_COLOR=never \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The dependency recipe: changes only when a manifest or Cargo.lock does.
FROM chef AS planner
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY crates crates
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
ARG TARGETARCH
# A cross linker and the target's standard library when the target platform is not the build
# machine's (no package of the crates compiles C, so a linker is all it takes).
# hadolint ignore=DL3008
RUN set -eu; \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    case "$arch" in \
      amd64) target="x86_64-unknown-linux-gnu"; gcc="gcc-x86-64-linux-gnu"; libc="libc6-dev-amd64-cross" ;; \
      arm64) target="aarch64-unknown-linux-gnu"; gcc="gcc-aarch64-linux-gnu"; libc="libc6-dev-arm64-cross" ;; \
      *) echo "unsupported platform linux/$arch: build for linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac; \
    echo "$target" > /rust-target; \
    if [ "$(dpkg --print-architecture)" != "$arch" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "$gcc" "$libc"; \
      rm -rf /var/lib/apt/lists/*; \
      rustup target add "$target"; \
    fi
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --target "$(cat /rust-target)" --recipe-path recipe.json
# The workspace only: a change to the Nginx configuration does not recompile it.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY crates crates
RUN cargo build --release --locked --target "$(cat /rust-target)" \
      -p vote -p result -p worker -p loadgen \
 && mkdir /out \
 && for bin in vote result worker loadgen; do \
      cp "target/$(cat /rust-target)/release/$bin" /out/; \
    done

FROM ${RUNTIME_IMAGE} AS runtime
USER 65532:65532

# nginx in front of vote and result (docker compose): the app on port 8081.
FROM ${NGINX_IMAGE} AS nginx
ENV NGINX_ENTRYPOINT_QUIET_LOGS=1
COPY nginx/nginx.conf nginx/http.conf nginx/routes.conf /etc/nginx/voting/
USER 101:101
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8081/vote/healthz"]
CMD ["nginx", "-c", "/etc/nginx/voting/nginx.conf", "-e", "stderr", "-g", "daemon off; pid /tmp/nginx.pid;"]

# loadgen: votes through nginx (the compose `seed` profile). A run, not a service.
FROM runtime AS loadgen
COPY --from=build /out/loadgen /usr/local/bin/loadgen
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/loadgen"]
CMD ["--help"]

FROM runtime AS worker
COPY --from=build /out/worker /usr/local/bin/worker
ENV VOTING_LISTEN=0.0.0.0:8084
EXPOSE 8084
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/worker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/worker"]

FROM runtime AS result
COPY --from=build /out/result /usr/local/bin/result
ENV VOTING_LISTEN=0.0.0.0:8083
EXPOSE 8083
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/result", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/result"]

# The last stage is what `docker build .` gives without --target.
FROM runtime AS vote
COPY --from=build /out/vote /usr/local/bin/vote
ENV VOTING_LISTEN=0.0.0.0:8082
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/vote", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/vote"]
