package msgsvc_test

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/msgsvc/msgsvc"
)

func TestFoldPairs(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"école", "ÉCOLE", true},
		{"Hello", "hELLO", true},
		{"σίσυφος", "ΣΊΣΥΦΟΣ", true},
		{"ς", "σ", true},
		{"привет", "ПРИВЕТ", true},
		{"k", "\u212A", true}, // KELVIN SIGN
		{"K", "\u212A", true},
		{"å", "\u212B", true}, // ANGSTROM SIGN
		{"s", "ſ", true},      // LONG S
		{"ß", "ẞ", true},
		{"ß", "ss", false}, // simple folding only
		{"é", "e\u0301", false},
		{"ﬁ", "fi", false},
		{"İ", "i", false},
		{"%", "%", true},
		{"a", "b", false},
	} {
		fa, fb := msgsvc.Fold(tc.a), msgsvc.Fold(tc.b)
		if (fa == fb) != tc.same {
			t.Errorf("Fold(%q) = %q, Fold(%q) = %q; same = %v, want %v", tc.a, fa, tc.b, fb, fa == fb, tc.same)
		}
		if (fa == fb) != strings.EqualFold(tc.a, tc.b) {
			t.Errorf("Fold disagrees with strings.EqualFold on %q, %q", tc.a, tc.b)
		}
	}
}

func TestFoldEveryRune(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		s := string(r)
		f := msgsvc.Fold(s)
		if utf8.RuneCountInString(f) != 1 || !strings.EqualFold(s, f) {
			t.Fatalf("Fold(%U) = %q", r, f)
		}
		for o := unicode.SimpleFold(r); o != r; o = unicode.SimpleFold(o) {
			if g := msgsvc.Fold(string(o)); g != f {
				t.Fatalf("Fold(%U) = %q but Fold(%U) = %q", r, f, o, g)
			}
		}
	}
}

func TestFoldSubstring(t *testing.T) {
	text := "Le Café de l'ÉCOLE, 300 \u212A, ΣΊΣΥΦΟΣ"
	for _, q := range []string{"café", "CAFÉ", "école", "300 k", "σίσυφος", "l'é"} {
		if !strings.Contains(msgsvc.Fold(text), msgsvc.Fold(q)) {
			t.Errorf("Fold(%q) not found in Fold(%q)", q, text)
		}
	}
	if strings.Contains(msgsvc.Fold(text), msgsvc.Fold("cafe")) {
		t.Error("accents folded away")
	}
}

func TestFoldIdempotentAndCheap(t *testing.T) {
	for _, s := range []string{"", "ABC 123", "abc", "Ünïcödé", "\xff\xfe"} {
		if f := msgsvc.Fold(s); msgsvc.Fold(f) != f {
			t.Errorf("Fold not idempotent on %q", s)
		}
	}
	s := "ALREADY FOLDED 123 %_\\"
	if n := testing.AllocsPerRun(100, func() { _ = msgsvc.Fold(s) }); n != 0 {
		t.Errorf("Fold of folded ASCII allocates %v times", n)
	}
}
