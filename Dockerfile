# syntax=docker/dockerfile:1

# msgsvcd in a container: a static binary (the SQLite driver is pure Go, so
# CGO_ENABLED=0 works) on distroless/static, run as a non-root user, with
# the database on the /data volume.
#
#   docker build -t msgsvc .
#   docker run --rm -p 8000:8000 -e WEBHOOK_SECRET=dev -v msgsvc-data:/data msgsvc

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV GOCACHE=/cache/go-build
RUN --mount=type=cache,target=/cache/go-build \
	CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/msgsvcd ./cmd/msgsvcd \
	&& mkdir -p /out/data

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/msgsvcd /usr/local/bin/msgsvcd
# Owned by the runtime user, so that a new named volume mounted here (which
# Docker fills from the image) is writable by it.
COPY --from=build --chown=65532:65532 /out/data /data
ENV DATABASE_URL=sqlite:////data/app.db \
	ADDR=:8000
EXPOSE 8000
VOLUME /data
USER 65532:65532
# msgsvcd stops gracefully on SIGTERM (docker stop), within SHUTDOWN_TIMEOUT.
ENTRYPOINT ["/usr/local/bin/msgsvcd"]
