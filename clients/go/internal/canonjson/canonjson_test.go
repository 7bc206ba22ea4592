package canonjson

import "testing"

func TestCanonicalizeMatchesPythonSortedCompactUnescaped(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"sorted nested keys", `{"b": {"z": 1, "a": [true, null]}, "a": "x"}`, `{"a":"x","b":{"a":[true,null],"z":1}}`},
		{"numbers keep their text", `{"n": 9007199254740993, "f": 1.50}`, `{"f":1.50,"n":9007199254740993}`},
		{"non-ASCII stays literal", `{"s": "na\u00efve \u2400 \ufffd <&> \u2028"}`, "{\"s\":\"naïve ␀ \ufffd <&> \u2028\"}"},
		{"control characters escaped", `"a\"b\\c\n\t\u0001\u007f"`, `"a\"b\\c\n\t\u0001` + "\x7f" + `"`},
		{"code point key order", `{"é": 1, "z": 2, "Z": 3}`, `{"Z":3,"z":2,"é":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Canonicalize(%s)\n got %s\nwant %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestCanonicalizeRejectsTrailingData(t *testing.T) {
	if _, err := Canonicalize([]byte(`{} {}`)); err == nil {
		t.Fatal("want an error for two JSON values")
	}
	if _, err := Canonicalize([]byte(`{`)); err == nil {
		t.Fatal("want an error for truncated JSON")
	}
}
