// Package pgtest gives tests a Postgres database of their own.
//
// Tests find the server through MSGSVC_TEST_POSTGRES_URL, a postgres:// URL
// of a role that may create databases (CI sets it once pg_isready answers).
// Without it they skip, saying so. Each call of URL creates a database with
// a unique name and drops it when the test ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// EnvVar names the variable that points the tests at a Postgres server.
const EnvVar = "MSGSVC_TEST_POSTGRES_URL"

// Server returns the URL in EnvVar, or skips tb when it is unset.
func Server(tb testing.TB) string {
	tb.Helper()
	server := os.Getenv(EnvVar)
	if server == "" {
		tb.Skipf("Postgres tests skipped: set %s to a postgres:// URL of a role that may create databases, "+
			"e.g. %s='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'", EnvVar, EnvVar)
	}
	return server
}

// URL creates an empty database on the server in EnvVar and returns its
// URL; the database is dropped when tb's test ends. It skips tb when EnvVar
// is unset.
func URL(tb testing.TB) string {
	tb.Helper()
	server := Server(tb)
	u, err := url.Parse(server)
	if err != nil {
		tb.Fatalf("%s does not parse: %v", EnvVar, err)
	}
	admin, err := sql.Open("pgx", server)
	if err != nil {
		tb.Fatalf("%s: %v", EnvVar, err)
	}
	defer admin.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "msgsvc_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name+` ENCODING 'UTF8' TEMPLATE template0`); err != nil {
		tb.Fatalf("creating the test database on %s: %v", u.Redacted(), err)
	}
	tb.Cleanup(func() {
		admin, err := sql.Open("pgx", server)
		if err != nil {
			tb.Errorf("dropping %s: %v", name, err)
			return
		}
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			tb.Errorf("dropping %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}
