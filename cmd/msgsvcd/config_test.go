package main

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// env is a fake getenv over a map.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"unset": {},
		"empty": {
			"WEBHOOK_SECRET": "", "WEBHOOK_SECRET_PREVIOUS": "", "DATABASE_URL": "", "ADDR": "",
			"LOG_LEVEL": "", "WHATSAPP_VERIFY_TOKEN": "", "MAX_BODY_BYTES": "", "SHUTDOWN_TIMEOUT": "",
			"MAX_CONNECTIONS": "", "READ_HEADER_TIMEOUT": "", "READ_TIMEOUT": "",
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := loadConfig(env(vars))
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			want := config{
				databaseURL:       "sqlite:///data/app.db",
				addr:              ":8000",
				logLevel:          slog.LevelInfo,
				maxBodyBytes:      1 << 20,
				shutdownTimeout:   20 * time.Second,
				maxConnections:    1024,
				readHeaderTimeout: 5 * time.Second,
				readTimeout:       30 * time.Second,
			}
			if c != want {
				t.Errorf("config = %+v, want %+v", c, want)
			}
		})
	}
}

func TestLoadConfigValues(t *testing.T) {
	c, err := loadConfig(env(map[string]string{
		"WEBHOOK_SECRET":          "s1",
		"WEBHOOK_SECRET_PREVIOUS": "s0",
		"DATABASE_URL":            "sqlite:////var/lib/msgsvc/app.db",
		"ADDR":                    "127.0.0.1:9000",
		"LOG_LEVEL":               "warn",
		"WHATSAPP_VERIFY_TOKEN":   "tok",
		"MAX_BODY_BYTES":          "2048",
		"SHUTDOWN_TIMEOUT":        "1m30s",
		"MAX_CONNECTIONS":         "64",
		"READ_HEADER_TIMEOUT":     "2s",
		"READ_TIMEOUT":            "10s",
	}))
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	want := config{
		secret: "s1", previousSecret: "s0",
		databaseURL:       "sqlite:////var/lib/msgsvc/app.db",
		addr:              "127.0.0.1:9000",
		logLevel:          slog.LevelWarn,
		verifyToken:       "tok",
		maxBodyBytes:      2048,
		shutdownTimeout:   90 * time.Second,
		maxConnections:    64,
		readHeaderTimeout: 2 * time.Second,
		readTimeout:       10 * time.Second,
	}
	if c != want {
		t.Errorf("config = %+v, want %+v", c, want)
	}
}

func TestLoadConfigAccepts(t *testing.T) {
	tests := []struct {
		variable, value string
		check           func(config) bool
	}{
		{"LOG_LEVEL", "debug", func(c config) bool { return c.logLevel == slog.LevelDebug }},
		{"LOG_LEVEL", "Info", func(c config) bool { return c.logLevel == slog.LevelInfo }},
		{"LOG_LEVEL", "WARN", func(c config) bool { return c.logLevel == slog.LevelWarn }},
		{"LOG_LEVEL", "eRRoR", func(c config) bool { return c.logLevel == slog.LevelError }},
		{"DATABASE_URL", "sqlite:///data/other.db", func(c config) bool { return c.databaseURL == "sqlite:///data/other.db" }},
		{"DATABASE_URL", "sqlite://:memory:", func(c config) bool { return c.databaseURL == "sqlite://:memory:" }},
		{"DATABASE_URL", "postgres://u@localhost/db", func(c config) bool { return c.databaseURL == "postgres://u@localhost/db" }},
		{"DATABASE_URL", "postgresql://u@localhost/db", func(c config) bool { return c.databaseURL == "postgresql://u@localhost/db" }},
		{"ADDR", ":0", func(c config) bool { return c.addr == ":0" }},
		{"ADDR", "[::1]:8080", func(c config) bool { return c.addr == "[::1]:8080" }},
		{"ADDR", "localhost:http", func(c config) bool { return c.addr == "localhost:http" }},
		{"MAX_BODY_BYTES", "1", func(c config) bool { return c.maxBodyBytes == 1 }},
		{"SHUTDOWN_TIMEOUT", "250ms", func(c config) bool { return c.shutdownTimeout == 250*time.Millisecond }},
		{"WEBHOOK_SECRET_PREVIOUS", "old", func(c config) bool { return c.secret == "" && c.previousSecret == "old" }},
	}
	for _, tt := range tests {
		t.Run(tt.variable+"="+tt.value, func(t *testing.T) {
			c, err := loadConfig(env(map[string]string{tt.variable: tt.value}))
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if !tt.check(c) {
				t.Errorf("config = %+v", c)
			}
		})
	}
}

// badConfigs lists values that must stop the daemon at start. The
// end-to-end test runs the same table against the binary.
var badConfigs = []struct{ variable, value string }{
	{"DATABASE_URL", "mysql://localhost/db"},
	{"DATABASE_URL", "not a url"},
	{"DATABASE_URL", "sqlite:///"},
	{"DATABASE_URL", "sqlite://relative.db"},
	{"LOG_LEVEL", "verbose"},
	{"LOG_LEVEL", "TRACE"},
	{"MAX_BODY_BYTES", "0"},
	{"MAX_BODY_BYTES", "-1"},
	{"MAX_BODY_BYTES", "abc"},
	{"MAX_BODY_BYTES", "1.5"},
	{"MAX_BODY_BYTES", "99999999999999999999"},
	{"SHUTDOWN_TIMEOUT", "abc"},
	{"SHUTDOWN_TIMEOUT", "0"},
	{"SHUTDOWN_TIMEOUT", "-1s"},
	{"SHUTDOWN_TIMEOUT", "10"},
	{"ADDR", "garbage"},
	{"ADDR", "127.0.0.1:99999"},
	{"ADDR", "127.0.0.1:nosuchport"},
	{"MAX_CONNECTIONS", "0"},
	{"MAX_CONNECTIONS", "-5"},
	{"MAX_CONNECTIONS", "many"},
	{"READ_HEADER_TIMEOUT", "0s"},
	{"READ_HEADER_TIMEOUT", "soon"},
	{"READ_TIMEOUT", "-1s"},
	{"READ_TIMEOUT", "30"},
}

func TestLoadConfigRejects(t *testing.T) {
	for _, tt := range badConfigs {
		t.Run(tt.variable+"="+tt.value, func(t *testing.T) {
			_, err := loadConfig(env(map[string]string{tt.variable: tt.value}))
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("loadConfig error = %v, want a *configError", err)
			}
			if ce.variable != tt.variable {
				t.Errorf("error names %s, want %s", ce.variable, tt.variable)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.variable+"=") || strings.Contains(msg, "\n") {
				t.Errorf("error %q is not one line starting with %s=", msg, tt.variable)
			}
		})
	}
}

func TestLoadConfigHidesDatabasePassword(t *testing.T) {
	for _, v := range []string{
		"postgress://app:hunter2@db.internal/msgs", // a typo in the scheme
		"mysql://app:hunter2@db.internal/msgs",
		"postgress://app:hunter2@[db.internal/msgs", // does not parse as a URL
	} {
		_, err := loadConfig(env(map[string]string{"DATABASE_URL": v}))
		if err == nil {
			t.Fatalf("DATABASE_URL=%s accepted", v)
		}
		if msg := err.Error(); strings.Contains(msg, "hunter2") || !strings.HasPrefix(msg, "DATABASE_URL=") {
			t.Errorf("DATABASE_URL=%s: error %q", v, msg)
		}
	}
}
