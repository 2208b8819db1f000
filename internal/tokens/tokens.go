// Package tokens cuts folded message text into the tokens that sqlstore's
// word index holds, and says which folded q that index can answer.
//
// A token is a maximal run of text without U+0020: every other character,
// tabs, newlines and punctuation included, belongs to it. An occurrence of a
// q without a space cannot cross a space, so such a q is in a text exactly
// when it is in one of the text's tokens. The index holds only the tokens of
// MinRunes characters or more with a letter (see Indexable), and answers
// only a q of that kind (see Eligible): every token that holds such a q is
// itself of that kind, since it holds q's letter and q's characters.
//
// The package is apart from sqlstore so that its fuzz target builds without
// SQLite.
package tokens

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MinRunes is the fewest characters of an indexed token: the fewest of a q
// that the word index answers.
const MinRunes = 4

// Indexable reports whether a token or a folded q is one the word index
// holds: MinRunes characters or more, one of them a letter
// (unicode.IsLetter).
func Indexable(tok []byte) bool {
	runes, letter := 0, false
	for _, r := range string(tok) { // no copy: the compiler ranges over tok
		letter = letter || ('A' <= r && r <= 'Z') || (r >= utf8.RuneSelf && unicode.IsLetter(r)) || ('a' <= r && r <= 'z')
		if runes++; runes >= MinRunes && letter {
			return true
		}
	}
	return false
}

// Eligible reports whether the word index can answer the folded q: no
// space, MinRunes characters or more, one of them a letter.
func Eligible(folded string) bool {
	return strings.IndexByte(folded, ' ') < 0 && Indexable([]byte(folded))
}

// Append appends to dst the tokens of text that the word index holds (see
// Indexable), in order, repeats included. They share text's memory.
func Append(dst [][]byte, text []byte) [][]byte {
	for len(text) > 0 {
		tok := text
		if i := bytes.IndexByte(text, ' '); i >= 0 {
			tok, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		if Indexable(tok) {
			dst = append(dst, tok)
		}
	}
	return dst
}
