# Everyday commands. The container targets need Docker with the compose plugin.

.PHONY: up down logs test run bench build lint ci

# Where `make bench` builds the daemon, and what it passes to the benchmark.
BENCH_DAEMON ?= /tmp/msgsvcd
BENCH_FLAGS ?= -seed 1000000 -duration 10s

up:
	docker compose up -d --build

down:
	docker compose down

logs:
	docker compose logs -f api

test:
	go test -race ./...

run:
	WEBHOOK_SECRET=dev go run ./cmd/msgsvcd

bench:
	go build -o $(BENCH_DAEMON) ./cmd/msgsvcd
	go run ./cmd/msgsvc-bench -daemon $(BENCH_DAEMON) $(BENCH_FLAGS)

build:
	CGO_ENABLED=0 go build -trimpath -o msgsvcd ./cmd/msgsvcd

lint:
	golangci-lint run ./...

ci:
	bash .ci/run
