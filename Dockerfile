# syntax=docker/dockerfile:1
# The one Stay image: the `stay` binary on distroless, run as a non-root user.
#
#   docker build -t stay .
#   docker run --rm stay --help              # the entrypoint is `stay`: any subcommand works
#   docker run --rm -p 8080:8080 stay serve  # SQLite under the /var/lib/stay volume
#
# Built with the `eventstoredb` feature, so one image serves every store (SQLite, PostgreSQL,
# EventStoreDB); docker-compose.yml and k8s/ use it for every role, migrate and payment-sim.
# tests/tests/deploy_dockerfile.rs lints this file and checks what a lint cannot.

# Base images are pinned to exact tags (the builder's Debian release matches the runtime's glibc);
# pin them by digest too where you mirror them. The full (not slim) Rust image: jemalloc's build
# runs `make`, which the slim one lacks.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: the manifests and the lock file with an empty crate
# per workspace member, so this layer (the slow part) is rebuilt only when dependencies change.
COPY Cargo.toml Cargo.lock ./
COPY domain/Cargo.toml domain/
COPY store/Cargo.toml store/
COPY http/Cargo.toml http/
COPY command-api/Cargo.toml command-api/
COPY saga/Cargo.toml saga/
COPY projections/Cargo.toml projections/
COPY query-api/Cargo.toml query-api/
COPY cli/Cargo.toml cli/
COPY tests/Cargo.toml tests/
RUN for crate in domain store http command-api saga projections query-api tests; do \
        mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; \
    done \
    && mkdir -p cli/src && echo 'fn main() {}' > cli/src/main.rs \
    && cargo build --release --locked -p stay-cli --features eventstoredb \
    && rm -rf cli/src target/release/.fingerprint/stay-*

# Then the sources. The empty crates above are newer than the sources copied here, so their
# build records were removed: every Stay crate is compiled again from the real files.
COPY . .
RUN cargo build --release --locked -p stay-cli --features eventstoredb \
    && install -D -m 0755 target/release/stay /out/usr/local/bin/stay \
    && install -d -m 0700 /out/var/lib/stay

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="stay" \
      org.opencontainers.image.description="Stay, an event-sourced accommodation-reservation platform: one binary for every role" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Stay"

COPY --from=build /out/usr/local/bin/stay /usr/local/bin/stay
# The data directory belongs to the runtime user, so a named volume mounted here starts out
# writable by it; everything else stays read-only (run with a read-only root filesystem).
COPY --from=build --chown=65532:65532 /out/var/lib/stay /var/lib/stay

# distroless's "nonroot" user (uid 65532), by number so runAsNonRoot can verify it.
USER 65532:65532
ENV STAY_DATA_DIR=/var/lib/stay \
    STAY_LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/stay"]
EXPOSE 8080

# `stay probe` GETs /healthz on the port of STAY_LISTEN (the image has no shell and no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["stay", "probe"]

ENTRYPOINT ["stay"]
CMD ["serve"]
