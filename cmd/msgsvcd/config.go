package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/msgsvc/msgsvc/sqlstore"
)

// config is the daemon's configuration, read from the environment.
type config struct {
	secret, previousSecret string
	databaseURL            string
	addr                   string
	logLevel               slog.Level
	verifyToken            string
	maxBodyBytes           int64
	shutdownTimeout        time.Duration
	maxConnections         int
	readHeaderTimeout      time.Duration
	readTimeout            time.Duration
}

// configError names the variable whose value is bad. The daemon prints it
// as one line and exits with status 2.
type configError struct {
	variable, value, problem string
}

func (e *configError) Error() string {
	return fmt.Sprintf("%s=%q: %s", e.variable, e.value, e.problem)
}

// loadConfig reads the environment through getenv. An empty variable counts
// as unset.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		secret:            getenv("WEBHOOK_SECRET"),
		previousSecret:    getenv("WEBHOOK_SECRET_PREVIOUS"),
		databaseURL:       "sqlite:///data/app.db",
		addr:              ":8000",
		logLevel:          slog.LevelInfo,
		verifyToken:       getenv("WHATSAPP_VERIFY_TOKEN"),
		maxBodyBytes:      1 << 20,
		shutdownTimeout:   20 * time.Second,
		maxConnections:    1024,
		readHeaderTimeout: 5 * time.Second,
		readTimeout:       30 * time.Second,
	}
	if v := getenv("DATABASE_URL"); v != "" {
		if _, err := sqlstore.ParseURL(v); err != nil {
			return c, &configError{"DATABASE_URL", redactURL(v), "not a supported database URL: use sqlite:///relative/path, sqlite:////absolute/path, sqlite://:memory: or postgres://..."}
		}
		c.databaseURL = v
	}
	if v := getenv("ADDR"); v != "" {
		if _, port, err := net.SplitHostPort(v); err != nil {
			return c, &configError{"ADDR", v, "not a listen address like :8000 or 127.0.0.1:8000"}
		} else if _, err := net.LookupPort("tcp", port); err != nil {
			return c, &configError{"ADDR", v, "not a valid port"}
		}
		c.addr = v
	}
	if v := getenv("LOG_LEVEL"); v != "" {
		switch strings.ToUpper(v) {
		case "DEBUG":
			c.logLevel = slog.LevelDebug
		case "INFO":
			c.logLevel = slog.LevelInfo
		case "WARN":
			c.logLevel = slog.LevelWarn
		case "ERROR":
			c.logLevel = slog.LevelError
		default:
			return c, &configError{"LOG_LEVEL", v, "unknown level: use DEBUG, INFO, WARN or ERROR"}
		}
	}
	if v := getenv("MAX_BODY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return c, &configError{"MAX_BODY_BYTES", v, "not a positive integer"}
		}
		c.maxBodyBytes = n
	}
	if v := getenv("MAX_CONNECTIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return c, &configError{"MAX_CONNECTIONS", v, "not a positive integer"}
		}
		c.maxConnections = n
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{
		{"SHUTDOWN_TIMEOUT", &c.shutdownTimeout},
		{"READ_HEADER_TIMEOUT", &c.readHeaderTimeout},
		{"READ_TIMEOUT", &c.readTimeout},
	} {
		if v := getenv(d.name); v != "" {
			parsed, err := time.ParseDuration(v)
			if err != nil || parsed <= 0 {
				return c, &configError{d.name, v, "not a positive duration like 20s"}
			}
			*d.dst = parsed
		}
	}
	return c, nil
}

// redactURL hides the password of a database URL, so that a mistyped
// postgres://user:password@host URL does not print its password when it is
// refused.
func redactURL(v string) string {
	u, err := url.Parse(v)
	if err != nil {
		if i := strings.LastIndex(v, "@"); i >= 0 {
			return "xxxxx" + v[i:] // cannot tell the user from the password: hide both
		}
		return v
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
	}
	return v
}
