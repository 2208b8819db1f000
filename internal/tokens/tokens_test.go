package tokens_test

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/msgsvc/msgsvc/internal/tokens"
)

// tokensOf returns the indexed tokens of text, as the word index cuts
// them.
func tokensOf(text string) []string {
	var out []string
	for _, tok := range tokens.Append(nil, []byte(text)) {
		out = append(out, string(tok))
	}
	return out
}

func TestTokens(t *testing.T) {
	for _, c := range []struct {
		text string
		want []string
	}{
		{"", nil},
		{"ab cd abc", nil},
		{"abcd", []string{"abcd"}},
		{"  lead  and   trail  ", []string{"lead", "trail"}},
		{"tab\there new\nline", []string{"tab\there", "new\nline"}},
		{"a,b ,,,, x.y.z", []string{"x.y.z"}},
		{"ééé éééé 😀😀😀 😀😀😀😀 😀😀😀x नमस्ते", []string{"éééé", "😀😀😀x", "नमस्ते"}},
		{"100% snake_case %_\\% 100%x", []string{"snake_case", "100%x"}},
		{"12345 +919876543210 12:30 2025-01-15 a123 1234Z", []string{"a123", "1234Z"}},
		{"abcd abcd", []string{"abcd", "abcd"}},
		{"\u00a0nbsp\u00a0 xy", []string{"\u00a0nbsp\u00a0"}},
	} {
		if got := tokensOf(c.text); !slices.Equal(got, c.want) {
			t.Errorf("tokens of %q: %q, want %q", c.text, got, c.want)
		}
	}
}

// FuzzTokens checks the property the word index rests on: a q that the word
// index answers (no space, tokens.MinRunes characters or more, one a letter)
// is in a text exactly when it is in one of the text's indexed tokens, and
// tokens are runs of the text without a space.
func FuzzTokens(f *testing.F) {
	for _, s := range []string{"", "abc", " a  bcd\tef ", "ÉCOLE école", "x😀😀y z", "नमस्ते दुनिया", "a b c d e"} {
		f.Add(s, 0, 4)
	}
	f.Fuzz(func(t *testing.T, text string, at, n int) {
		if !utf8.ValidString(text) { // text_fold always is
			return
		}
		toks := tokensOf(text)
		for _, tok := range toks {
			if strings.Contains(tok, " ") || !tokens.Indexable([]byte(tok)) || !strings.Contains(text, tok) {
				t.Fatalf("bad token %q of %q", tok, text)
			}
		}
		// A window of characters of text that the word index answers is
		// in a token, and one that is in a token is in text.
		runes := []rune(text)
		if len(runes) == 0 {
			return
		}
		at = ((at % len(runes)) + len(runes)) % len(runes)
		n = tokens.MinRunes + ((n%8)+8)%8
		if at+n > len(runes) {
			return
		}
		q := string(runes[at : at+n])
		inTokens := slices.ContainsFunc(toks, func(tok string) bool { return strings.Contains(tok, q) })
		if tokens.Eligible(q) && inTokens != strings.Contains(text, q) {
			t.Fatalf("q %q in text %q: %v, in its tokens %q: %v", q, text, strings.Contains(text, q), toks, inTokens)
		}
	})
}
