# syntax=docker/dockerfile:1
# The Remit container image: the `remit` binary on a distroless base (glibc, CA certificates,
# no shell, no package manager), running as a fixed non-root UID.
#
#   docker build -t remit .
#   docker run -d --name remit -p 7878:7878 -v remit-data:/var/lib/remit \
#     -e REMIT_ISSUER=https://remit.example.com -e REMIT_KEK remit
#
# See docs/DEPLOYMENT.md ("Container image"). Linted by scripts/lint-dockerfile.sh (hadolint,
# zero findings).

# ---- build ---------------------------------------------------------------------------------
# The same Rust as CI; Debian 12 like the runtime image, so the binary's glibc matches.
FROM rust:1.95.0-slim-bookworm AS builder

# Release profile as in Cargo.toml, but without debug info and stripped (a smaller image).
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true \
    CARGO_TERM_COLOR=never

WORKDIR /src
COPY . .

# The registry and target directory are BuildKit cache mounts (kept between builds, not in
# the image), so the binary is copied out in the same step. C code (SQLite, AWS-LC) is built
# with the image's gcc.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p remit --bin remit \
    && install -D -m 0755 target/release/remit /out/remit \
    && install -d -m 0700 /out/state/remit

# ---- runtime -------------------------------------------------------------------------------
# Debian 12 with glibc, libgcc and CA certificates; `nonroot` is UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /out/remit /usr/local/bin/remit
# The data directory /var/lib/remit (mode 0700), owned by the service user, so a new named
# volume starts out private and writable. (Copying its parent keeps the directory's mode.)
COPY --from=builder --chown=65532:65532 /out/state/ /var/lib/

# REMIT_DATA_DIR also lets `docker exec … remit <command>` find the admin credential.
# Inside a container Remit must listen on all interfaces (the default is 127.0.0.1:7878);
# like every REMIT_* variable this overrides `listen` in remit.toml.
ENV REMIT_DATA_DIR=/var/lib/remit \
    REMIT_LISTEN=0.0.0.0:7878

USER 65532:65532
WORKDIR /var/lib/remit
VOLUME ["/var/lib/remit"]
EXPOSE 7878

ENTRYPOINT ["remit"]
CMD ["serve", "--data-dir", "/var/lib/remit"]
