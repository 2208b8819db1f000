package msgsvc

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
)

// Header names that may carry a webhook signature.
const (
	// SignatureHeader carries hex(HMAC-SHA256(secret, body)), optionally
	// prefixed with "sha256=". It is the original msgsvc contract.
	SignatureHeader = "X-Signature"
	// HubSignatureHeader carries "sha256=" and the hex digest, as Meta's
	// WhatsApp Cloud API and GitHub send it.
	HubSignatureHeader = "X-Hub-Signature-256"
)

// Signature errors returned by [Verify]. Use errors.Is to tell them apart.
var (
	// ErrNoSecret means no secret is configured, so nothing can verify.
	ErrNoSecret = errors.New("msgsvc: no webhook secret configured")
	// ErrNoSignature means neither signature header is present.
	ErrNoSignature = errors.New("msgsvc: no signature header")
	// ErrMalformedSignature means a signature header is not 64 hex digits
	// with the expected prefix.
	ErrMalformedSignature = errors.New("msgsvc: malformed signature header")
	// ErrInvalidSignature means a well-formed signature matches no secret.
	ErrInvalidSignature = errors.New("msgsvc: signature does not match")
)

// Sign returns the lowercase hex HMAC-SHA256 of body under secret: the value
// of the X-Signature header a sender sets. Prefix it with "sha256=" for
// X-Hub-Signature-256.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// Verify checks the signature headers of a webhook request against body and
// every secret in secrets. It returns nil when any header value carries a
// valid signature under any non-empty secret. Digests are compared with
// hmac.Equal, in constant time.
func Verify(header http.Header, body []byte, secrets ...[]byte) error {
	var macs [][sha256.Size]byte
	for _, s := range secrets {
		if len(s) == 0 {
			continue // an empty secret never verifies anything
		}
		m := hmac.New(sha256.New, s)
		m.Write(body)
		var sum [sha256.Size]byte
		m.Sum(sum[:0])
		macs = append(macs, sum)
	}
	if len(macs) == 0 {
		return ErrNoSecret
	}
	seen, malformed := false, false
	check := func(values []string, prefixRequired bool) bool {
		for _, v := range values {
			seen = true
			digest, ok := parseSignature(v, prefixRequired)
			if !ok {
				malformed = true
				continue
			}
			for i := range macs {
				if hmac.Equal(digest[:], macs[i][:]) {
					return true
				}
			}
		}
		return false
	}
	if check(header.Values(SignatureHeader), false) || check(header.Values(HubSignatureHeader), true) {
		return nil
	}
	switch {
	case !seen:
		return ErrNoSignature
	case malformed:
		return ErrMalformedSignature
	}
	return ErrInvalidSignature
}

// parseSignature decodes "[sha256=]<64 hex digits>", the prefix and the digits
// in any case.
func parseSignature(v string, prefixRequired bool) (digest [sha256.Size]byte, ok bool) {
	const prefix = "sha256="
	if len(v) >= len(prefix) && strings.EqualFold(v[:len(prefix)], prefix) {
		v = v[len(prefix):]
	} else if prefixRequired {
		return digest, false
	}
	if len(v) != 2*sha256.Size {
		return digest, false
	}
	if _, err := hex.Decode(digest[:], []byte(v)); err != nil {
		return digest, false
	}
	return digest, true
}
