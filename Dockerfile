# Images of dssmr: the replica/client/bench binary (target `dssmr`, the default) and the
# Kubernetes operator (target `operator`).
#
# The binaries are built outside Docker and copied in, so building the images pulls nothing:
#
#   e2e/build-images.sh            # static binaries into dist/, then both images
#
# (the tests' images, `DSSMR_IMAGE_PROFILE=dev e2e/build-images.sh`, carry dynamically linked
# binaries and put the libraries they load into dist/root/, copied to / below; for static
# binaries dist/root/ is empty.)
#
# or by hand:
#
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --target x86_64-unknown-linux-gnu --bin dssmr --bin dssmr-operator
#   mkdir -p dist/root dist/data && cp target/x86_64-unknown-linux-gnu/release/dssmr{,-operator} dist/
#   docker build -t dssmr .                        && docker build -t dssmr-operator --target operator .
#
# The binaries are linked statically (glibc), so the default base is `scratch`: nothing to
# pull, nothing in the image but the binary. Elsewhere pass a normal base for a shell and CA
# certificates, e.g. `--build-arg BASE=gcr.io/distroless/static-debian12` or
# `--build-arg BASE=debian:bookworm-slim`.
ARG BASE=scratch

FROM ${BASE} AS dssmr
COPY dist/root/ /
COPY dist/dssmr /usr/local/bin/dssmr
# The data directory, owned by the unprivileged user (scratch has no mkdir/chown).
COPY --chown=65532:65532 dist/data/ /var/lib/dssmr/
USER 65532:65532
# gRPC (peers, clients) and HTTP (/metrics, /healthz, /readyz).
EXPOSE 7000 8080
VOLUME ["/var/lib/dssmr"]
ENTRYPOINT ["/usr/local/bin/dssmr"]
CMD ["--help"]

FROM ${BASE} AS operator
COPY dist/root/ /
COPY dist/dssmr-operator /usr/local/bin/dssmr-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dssmr-operator"]

# The default target is the replica image.
FROM dssmr
