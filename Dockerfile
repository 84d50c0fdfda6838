# syntax=docker/dockerfile:1
# modelwatch's container image: the sidecar and the injection webhook in one
# binary, on a distroless base (glibc and libgcc, no shell, no package
# manager), running as the non-root user 65532.
#
#   docker build -t modelwatch:0.1.0 .
#
# CI builds the binary with exactly the `cargo build` line below
# (scripts/test.sh reads it from this file), so a change that breaks the image's
# build breaks CI too.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
# librdkafka (the Kafka backend) and its OpenSSL are built from source and
# linked statically: their build needs make and perl.
RUN apt-get update && apt-get install -y --no-install-recommends make perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin modelwatch
RUN strip --strip-debug target/release/modelwatch

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/modelwatch /usr/local/bin/modelwatch
USER 65532:65532
# proxy, admin (metrics, health, status), injection webhook (TLS), injector metrics
EXPOSE 8080 9464 8443
ENTRYPOINT ["/usr/local/bin/modelwatch"]
CMD ["run"]
