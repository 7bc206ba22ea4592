// Package canonjson prints JSON in the canonical form that every runwire
// client compares (fixtures/corpus/README.md): object keys sorted
// recursively, compact separators, non-ASCII text unescaped. It matches
// Python's json.dumps(sort_keys=True, separators=(",", ":"),
// ensure_ascii=False), so lines printed by different clients compare equal.
package canonjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// Canonicalize parses one JSON value from b and returns its canonical form.
// Numbers keep their literal text.
func Canonicalize(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonjson: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("canonjson: trailing data after the JSON value")
	}
	var out bytes.Buffer
	write(&out, v)
	return out.Bytes(), nil
}

func write(out *bytes.Buffer, v any) {
	switch v := v.(type) {
	case nil:
		out.WriteString("null")
	case bool:
		if v {
			out.WriteString("true")
		} else {
			out.WriteString("false")
		}
	case json.Number:
		out.WriteString(v.String())
	case string:
		writeString(out, v)
	case []any:
		out.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				out.WriteByte(',')
			}
			write(out, e)
		}
		out.WriteByte(']')
	case map[string]any:
		// Byte order of UTF-8 is code point order, which is what Python
		// sorts by.
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				out.WriteByte(',')
			}
			writeString(out, k)
			out.WriteByte(':')
			write(out, v[k])
		}
		out.WriteByte('}')
	default:
		panic(fmt.Sprintf("canonjson: unexpected %T from encoding/json", v))
	}
}

// writeString escapes only what JSON requires: the quote, the backslash and
// control characters. encoding/json would also escape <, >, & and U+2028/9.
func writeString(out *bytes.Buffer, s string) {
	out.WriteByte('"')
	for _, r := range strings.ToValidUTF8(s, string(utf8.RuneError)) {
		switch r {
		case '"':
			out.WriteString(`\"`)
		case '\\':
			out.WriteString(`\\`)
		case '\n':
			out.WriteString(`\n`)
		case '\r':
			out.WriteString(`\r`)
		case '\t':
			out.WriteString(`\t`)
		case '\b':
			out.WriteString(`\b`)
		case '\f':
			out.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(out, `\u%04x`, r)
			} else {
				out.WriteRune(r)
			}
		}
	}
	out.WriteByte('"')
}
