# syntax=docker/dockerfile:1
# kontextbot: a static binary on a minimal, non-root image.
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t kontextbot .
#   docker run --env-file .env -v kontextbot-data:/data -p 8080:8080 --stop-timeout 40 kontextbot
# (Docker's default stop timeout, 10 s, is shorter than SHUTDOWN_TIMEOUT, 30 s.)

FROM golang:1.26 AS build
# The build context has no .git: the version comes from these arguments.
ARG VERSION=devel
ARG REVISION=
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
    -ldflags="-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/kontextbot . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=devel
ARG REVISION=
ARG CREATED=
LABEL org.opencontainers.image.title="kontextbot" \
      org.opencontainers.image.description="FLUX.1 Kontext image generation and editing for Discord and Slack, through CometAPI" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/kontextbot /kontextbot
# The store lives on a volume owned by the image's non-root user (65532). A
# host folder mounted here must be writable by that uid (chown 65532:65532).
COPY --from=build --chown=65532:65532 /out/data /data
ENV KONTEXT_DB=/data/kontextbot.db \
    HTTP_ADDR=0.0.0.0:8080
VOLUME /data
EXPOSE 8080
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/kontextbot", "healthcheck"]
ENTRYPOINT ["/kontextbot"]
CMD ["serve"]
