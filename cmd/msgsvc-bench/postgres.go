package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// Benchmark databases on Postgres: with -postgres, the empty and the seeded
// stores are databases of their own on that server, made anew for each run
// (the seeded one is kept for -reuse-seed).
const (
	pgEmptyDatabase = "msgsvc_bench_empty"
	pgBigDatabase   = "msgsvc_bench_big"
)

// emptyDatabase returns the URL of a new, empty database for the ingest
// workload: an SQLite file in -dir, or a Postgres database with -postgres.
func (o options) emptyDatabase(ctx context.Context) (string, error) {
	if o.postgres == "" {
		return freshSQLite(o.dir, "empty.db"), nil
	}
	return recreateDatabase(ctx, o.postgres, pgEmptyDatabase)
}

// bigDatabase returns the URL of the database to seed, emptied first unless
// it is to be reused.
func (o options) bigDatabase(ctx context.Context, reuse bool) (string, error) {
	if o.postgres == "" && reuse {
		return "sqlite:///" + filepath.Join(o.dir, "big.db"), nil
	}
	if o.postgres == "" {
		return freshSQLite(o.dir, "big.db"), nil
	}
	if reuse {
		return databaseURL(o.postgres, pgBigDatabase)
	}
	return recreateDatabase(ctx, o.postgres, pgBigDatabase)
}

// backend names the store the workloads run on.
func (o options) backend() string {
	if o.postgres == "" {
		return "SQLite"
	}
	return "PostgreSQL (on the same machine)"
}

// databaseURL returns server with its database replaced by name.
func databaseURL(server, name string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("-postgres does not parse")
	}
	u.Path = "/" + name
	return u.String(), nil
}

// recreateDatabase drops and creates the database name on server.
func recreateDatabase(ctx context.Context, server, name string) (string, error) {
	admin, err := sql.Open("pgx", server)
	if err != nil {
		return "", err
	}
	defer admin.Close()
	for _, stmt := range []string{
		`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`,
		`CREATE DATABASE ` + name + ` ENCODING 'UTF8' TEMPLATE template0`,
	} {
		if _, err := admin.ExecContext(ctx, stmt); err != nil {
			return "", fmt.Errorf("preparing the benchmark database %s: %w", name, err)
		}
	}
	return databaseURL(server, name)
}

// analyze runs ANALYZE on a Postgres benchmark database, as autovacuum would
// within a minute or so of a bulk load: without statistics, the planner
// takes a text pattern for rare, and gathers every match of a common word
// to sort them instead of walking the list order. SQLite needs nothing:
// the store plans text searches itself.
func (o options) analyze(ctx context.Context, dbURL string) error {
	if o.postgres == "" {
		return nil
	}
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `ANALYZE`); err != nil {
		return fmt.Errorf("analyzing the seeded database: %w", err)
	}
	return nil
}
