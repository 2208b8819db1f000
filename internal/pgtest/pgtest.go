// Package pgtest gives tests a Postgres schema of their own, and tells
// whether a test run is one for the Postgres backend.
//
// Tests find the server through MSGSVC_TEST_POSTGRES_URL, a postgres:// URL
// of a role that may create schemas and extensions in its database (CI sets
// it once pg_isready answers). Without it they skip, saying so. Each call of
// URL creates a schema with a unique name, and drops it when the test ends;
// the URL it returns puts that schema first on the search_path, so a store
// opened on it creates its tables there. A schema costs far less than a
// database, so every test can have one.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// EnvVar names the variable that points the tests at a Postgres server.
const EnvVar = "MSGSVC_TEST_POSTGRES_URL"

// BackendVar names the variable that, set to "postgres", runs the HTTP-level
// tests of a package on Postgres instead of SQLite. Tests that re-run their
// package set it for the run; see Postgres.
const BackendVar = "MSGSVC_TEST_BACKEND"

// Postgres reports whether this test run is for the Postgres backend.
func Postgres() bool { return os.Getenv(BackendVar) == "postgres" }

// Server returns the URL in EnvVar, or skips tb when it is unset.
func Server(tb testing.TB) string {
	tb.Helper()
	server := os.Getenv(EnvVar)
	if server == "" {
		tb.Skipf("Postgres tests skipped: set %s to a postgres:// URL of a role that may create schemas, "+
			"e.g. %s='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'", EnvVar, EnvVar)
	}
	return server
}

// URL creates an empty schema on the server in EnvVar and returns a URL
// whose search_path starts with it; the schema is dropped when tb's test
// ends. It skips tb when EnvVar is unset.
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
	schema := "msgsvc_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The trigram extension lives in public, for every schema to share:
	// installed from a test schema's search_path, it would go into that
	// schema and vanish with it. Concurrent CREATE EXTENSION IF NOT EXISTS
	// can collide, so one test installs it at a time.
	tx, err := admin.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatalf("connecting to %s: %v", u.Redacted(), err)
	}
	_, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7235142)`)
	if err == nil {
		_, err = tx.ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public`)
	}
	if err == nil {
		_, err = tx.ExecContext(ctx, `CREATE SCHEMA `+schema)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		_ = tx.Rollback()
		tb.Fatalf("creating the test schema on %s: %v", u.Redacted(), err)
	}
	tb.Cleanup(func() {
		admin, err := sql.Open("pgx", server)
		if err != nil {
			tb.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
			tb.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema+",public")
	u.RawQuery = q.Encode()
	return u.String()
}

// Rerun runs the tests matching pattern again, in a child process of this
// test binary with BackendVar=postgres, and fails t with the child's output
// when the child fails. So one `go test` runs a package's HTTP-level tests
// on both backends. It skips t inside the Postgres run itself, and when
// EnvVar is unset.
func Rerun(t *testing.T, pattern string) {
	t.Helper()
	if Postgres() {
		t.Skip("this is the Postgres run")
	}
	Server(t)
	args := []string{"-test.run", pattern, "-test.skip", "^" + t.Name() + "$", "-test.count", "1", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	if deadline, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout", time.Until(deadline).Round(time.Second).String())
	}
	cmd := exec.Command(os.Args[0], args...) //nolint:gosec // G204: this very test binary, with test flags
	cmd.Env = append(os.Environ(), BackendVar+"=postgres")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tests matching %s failed on Postgres (%v):\n%s", pattern, err, out)
	}
	passed, skipped := strings.Count(string(out), "\n--- PASS: "), strings.Count(string(out), "\n--- SKIP: ")
	if passed == 0 {
		t.Fatalf("no test matching %s ran on Postgres:\n%s", pattern, out)
	}
	t.Logf("on Postgres: %d tests matching %s passed, %d skipped", passed, pattern, skipped)
}
