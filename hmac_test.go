package msgsvc_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
)

func TestSignKnownVector(t *testing.T) {
	// The example of GitHub's webhook documentation.
	got := msgsvc.Sign([]byte("It's a Secret to Everybody"), []byte("Hello, World!"))
	const want = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
	if s := msgsvc.Sign([]byte("k"), nil); len(s) != 64 || strings.ToLower(s) != s {
		t.Errorf("Sign of an empty body = %q", s)
	}
}

// header builds an http.Header from name, value pairs, keeping repeats.
func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestVerify(t *testing.T) {
	body := []byte(`{"message_id":"m1"}`)
	cur, prev := []byte("current"), []byte("previous")
	sig := msgsvc.Sign(cur, body)
	psig := msgsvc.Sign(prev, body)
	other := msgsvc.Sign([]byte("other"), body)
	tests := []struct {
		name    string
		header  http.Header
		secrets [][]byte
		want    error
	}{
		{"X-Signature", header("X-Signature", sig), [][]byte{cur}, nil},
		{"X-Signature upper", header("X-Signature", strings.ToUpper(sig)), [][]byte{cur}, nil},
		{"X-Signature prefixed", header("X-Signature", "sha256="+sig), [][]byte{cur}, nil},
		{"X-Signature prefix upper", header("X-Signature", "SHA256="+sig), [][]byte{cur}, nil},
		{"hub", header("X-Hub-Signature-256", "sha256="+sig), [][]byte{cur}, nil},
		{"hub prefix any case", header("X-Hub-Signature-256", "sHa256="+strings.ToUpper(sig)), [][]byte{cur}, nil},
		{"previous secret", header("X-Signature", psig), [][]byte{cur, prev}, nil},
		{"previous secret first in the list", header("X-Signature", sig), [][]byte{prev, cur}, nil},
		{"repeated header, second valid", header("X-Signature", other, "X-Signature", sig), [][]byte{cur}, nil},
		{"repeated header, first malformed", header("X-Signature", "bogus", "X-Signature", sig), [][]byte{cur}, nil},
		{"both headers, hub valid", header("X-Signature", other, "X-Hub-Signature-256", "sha256="+sig), [][]byte{cur}, nil},
		{"both headers, X-Signature valid", header("X-Signature", sig, "X-Hub-Signature-256", "garbage"), [][]byte{cur}, nil},
		{"empty secret skipped", header("X-Signature", sig), [][]byte{{}, cur}, nil},

		{"no secrets", header("X-Signature", sig), nil, msgsvc.ErrNoSecret},
		{"only empty secrets", header("X-Signature", msgsvc.Sign(nil, body)), [][]byte{{}, nil}, msgsvc.ErrNoSecret},
		{"no header", header(), [][]byte{cur}, msgsvc.ErrNoSignature},
		{"unrelated header", header("X-Hub-Signature", "sha1=00"), [][]byte{cur}, msgsvc.ErrNoSignature},
		{"empty value", header("X-Signature", ""), [][]byte{cur}, msgsvc.ErrMalformedSignature},
		{"short", header("X-Signature", sig[:62]), [][]byte{cur}, msgsvc.ErrMalformedSignature},
		{"odd length", header("X-Signature", sig[:63]), [][]byte{cur}, msgsvc.ErrMalformedSignature},
		{"long", header("X-Signature", sig+"00"), [][]byte{cur}, msgsvc.ErrMalformedSignature},
		{"non-hex", header("X-Signature", "x"+sig[1:]), [][]byte{cur}, msgsvc.ErrMalformedSignature},
		{"hub without prefix", header("X-Hub-Signature-256", sig), [][]byte{cur}, msgsvc.ErrMalformedSignature},
		{"hub sha1 prefix", header("X-Hub-Signature-256", "sha1="+sig), [][]byte{cur}, msgsvc.ErrMalformedSignature},
		{"prefix then space", header("X-Signature", "sha256= "+sig[1:]), [][]byte{cur}, msgsvc.ErrMalformedSignature},
		{"wrong", header("X-Signature", other), [][]byte{cur}, msgsvc.ErrInvalidSignature},
		{"wrong on both headers", header("X-Signature", other, "X-Hub-Signature-256", "sha256="+other), [][]byte{cur}, msgsvc.ErrInvalidSignature},
		{"previous not configured", header("X-Signature", psig), [][]byte{cur}, msgsvc.ErrInvalidSignature},
		{"one malformed one wrong", header("X-Signature", "zz", "X-Hub-Signature-256", "sha256="+other), [][]byte{cur}, msgsvc.ErrMalformedSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := msgsvc.Verify(tc.header, body, tc.secrets...)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyIsOverExactBytes(t *testing.T) {
	secret := []byte("s")
	body := []byte(`{"a": 1}`)
	sig := msgsvc.Sign(secret, body)
	for _, other := range [][]byte{[]byte(`{"a":1}`), []byte(`{"a": 1} `), []byte(`{"a": 1}` + "\n"), nil} {
		if err := msgsvc.Verify(header("X-Signature", sig), other, secret); !errors.Is(err, msgsvc.ErrInvalidSignature) {
			t.Errorf("body %q verified with the signature of %q: %v", other, body, err)
		}
	}
}

func TestVerifyDoesNotMutateSecrets(t *testing.T) {
	secret := []byte("secret")
	body := []byte("body")
	_ = msgsvc.Verify(header("X-Signature", msgsvc.Sign(secret, body)), body, secret)
	if string(secret) != "secret" || string(body) != "body" {
		t.Error("Verify changed its arguments")
	}
}
