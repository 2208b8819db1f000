package msgsvc

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Fold maps s to a canonical form under Unicode simple case folding: two
// strings are equal ignoring case, in the sense of strings.EqualFold, exactly
// when their folds are equal, and a substring of one folds to a substring of
// the other. Each rune becomes the smallest rune of its case-folding orbit,
// so the mapping is one rune to one rune and needs no tables of its own.
// Stores keep Fold(text) beside the text and search it for Fold(q).
func Fold(s string) string {
	i := 0
	for i < len(s) {
		c := s[i]
		if c >= utf8.RuneSelf || ('a' <= c && c <= 'z') {
			break
		}
		i++
	}
	if i == len(s) {
		return s // nothing to fold: no allocation
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for _, r := range s[i:] {
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'a' <= r && r <= 'z' {
			return r - 'a' + 'A' // an ASCII capital is the smallest of its orbit
		}
		return r
	}
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return least
}
