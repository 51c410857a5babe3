# syntax=docker/dockerfile:1
# kontextbot: a static binary on a minimal, non-root image.
#   docker build -t kontextbot .
#   docker run --env-file .env -v kontextbot-data:/data -p 8080:8080 kontextbot

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/kontextbot . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kontextbot /kontextbot
# The store lives on a volume owned by the image's non-root user (65532).
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
