package sqlstore

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/pgtest"
	"github.com/msgsvc/msgsvc/storetest"
)

func TestConformancePostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) msgsvc.Store {
		db, err := Open(context.Background(), pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		return db // Run closes it
	})
}

func TestPostgresURLOptions(t *testing.T) {
	for _, c := range []struct {
		url   string
		conns int
		ok    bool
	}{
		{"postgres://u@h/db", defaultPostgresReadConns, true},
		{"postgresql://u@h/db?sslmode=disable&pool_max_conns=3", 3, true},
		{"postgres://u@h/db?pool_max_conns=0", 0, false},
		{"postgres://u@h/db?pool_max_conns=x", 0, false},
		{"postgres://u:secret@h:notaport/db", 0, false},
	} {
		t.Run(c.url, func(t *testing.T) {
			cfg, conns, err := postgresConfig(c.url)
			if !c.ok {
				if !errors.Is(err, ErrBadURL) {
					t.Fatalf("postgresConfig = %v, want ErrBadURL", err)
				}
				if err != nil && strings.Contains(err.Error(), "secret") {
					t.Fatalf("the error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if conns != c.conns {
				t.Errorf("read conns = %d, want %d", conns, c.conns)
			}
			if _, set := cfg.RuntimeParams["pool_max_conns"]; set {
				t.Error("pool_max_conns would be sent to the server")
			}
			if cfg.RuntimeParams["plan_cache_mode"] != "force_custom_plan" {
				t.Errorf("plan_cache_mode = %q", cfg.RuntimeParams["plan_cache_mode"])
			}
		})
	}
}

func TestLikeContains(t *testing.T) {
	for in, want := range map[string]string{
		"":       "%%",
		"abc":    "%abc%",
		"50%":    `%50\%%`,
		"a_b":    `%a\_b%`,
		`C:\dir`: `%C:\\dir%`,
		"école":  "%école%",
	} {
		if got := likeContains(in); got != want {
			t.Errorf("likeContains(%q) = %q, want %q", in, got, want)
		}
	}
}
