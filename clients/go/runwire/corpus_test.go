package runwire

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	runwirev1 "github.com/runwire/runwire/clients/go/gen/runwire/v1"
	"github.com/runwire/runwire/clients/go/internal/canonjson"
)

// corpusDir is fixtures/corpus, found from this file so that the test does
// not depend on the working directory.
func corpusDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate corpus_test.go")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "fixtures", "corpus")
}

// variants is the Go view of the closed catalog: the fields of the
// RunEvent.event oneof, reflected from the generated code.
func variants() []string {
	fields := (&runwirev1.RunEvent{}).ProtoReflect().Descriptor().Oneofs().ByName("event").Fields()
	names := make([]string, fields.Len())
	for i := range fields.Len() {
		names[i] = string(fields.Get(i).Name())
	}
	sort.Strings(names)
	return names
}

// goldens maps each golden name in the corpus to the extensions present.
func goldens(t *testing.T) map[string][]string {
	t.Helper()
	entries, err := os.ReadDir(corpusDir(t))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if ext == ".json" || ext == ".binpb" {
			name := strings.TrimSuffix(e.Name(), ext)
			out[name] = append(out[name], ext)
		}
	}
	return out
}

// catalogProblems compares the catalog with the corpus both ways: a variant
// without both golden files, and a golden naming no variant, are problems.
func catalogProblems(variants []string, files map[string][]string) []string {
	var problems []string
	known := map[string]bool{}
	for _, v := range variants {
		known[v] = true
		exts := strings.Join(files[v], " ")
		if !strings.Contains(exts, ".json") || !strings.Contains(exts, ".binpb") {
			problems = append(problems, fmt.Sprintf("variant %s: golden files %q, want %s.json and %s.binpb", v, exts, v, v))
		}
	}
	for name := range files {
		if !known[name] {
			problems = append(problems, fmt.Sprintf("golden %s names no variant of RunEvent.event", name))
		}
	}
	sort.Strings(problems)
	return problems
}

func TestCorpusMatchesTheCatalogBothWays(t *testing.T) {
	files := goldens(t)
	if len(files) == 0 {
		t.Fatalf("no golden files in %s", corpusDir(t))
	}
	for _, p := range catalogProblems(variants(), files) {
		t.Error(p)
	}
}

func TestCatalogProblemsFindsMissingAndStrayGoldens(t *testing.T) {
	got := catalogProblems(
		[]string{"node_log", "node_token", "run_started"},
		map[string][]string{
			"node_log":     {".json", ".binpb"},
			"node_token":   {".json"}, // binary missing
			"node_renamed": {".json", ".binpb"},
		})
	want := []string{
		"golden node_renamed names no variant of RunEvent.event",
		`variant node_token: golden files ".json", want node_token.json and node_token.binpb`,
		`variant run_started: golden files "", want run_started.json and run_started.binpb`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCorpusRoundTrips(t *testing.T) {
	dir := corpusDir(t)
	for _, v := range variants() {
		t.Run(v, func(t *testing.T) {
			jsonText, err := os.ReadFile(filepath.Join(dir, v+".json"))
			if err != nil {
				t.Fatal(err)
			}
			binary, err := os.ReadFile(filepath.Join(dir, v+".binpb"))
			if err != nil {
				t.Fatal(err)
			}

			fromJSON := &runwirev1.RunEvent{}
			if err := protojson.Unmarshal(jsonText, fromJSON); err != nil {
				t.Fatalf("decode JSON: %v", err)
			}
			fromBinary, err := DecodeEvent(binary)
			if err != nil {
				t.Fatalf("decode binary: %v", err)
			}
			if !proto.Equal(fromJSON, fromBinary) {
				t.Errorf("JSON and binary decode differently:\n json   %v\n binary %v", fromJSON, fromBinary)
			}
			if got := variantName(fromBinary); got != v {
				t.Errorf("%s.binpb holds variant %s", v, got)
			}

			reJSON, err := protojson.Marshal(fromJSON)
			if err != nil {
				t.Fatal(err)
			}
			want, err := canonjson.Canonicalize(jsonText)
			if err != nil {
				t.Fatal(err)
			}
			got, err := canonjson.Canonicalize(reJSON)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("JSON round trip differs:\n got %s\nwant %s", got, want)
			}

			reBinary, err := proto.MarshalOptions{Deterministic: true}.Marshal(fromBinary)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(reBinary, binary) {
				t.Errorf("binary round trip differs:\n got %x\nwant %x", reBinary, binary)
			}
		})
	}
}

// TestEdgeCorpusRoundTrips runs fixtures/corpus/edge/ (BOMs, astral and
// combining characters, escapes, int64 limits, the first and last
// timestamps, negative durations, enum numbers this client does not name,
// empty payloads) through the same round trips as the goldens.
func TestEdgeCorpusRoundTrips(t *testing.T) {
	dir := filepath.Join(corpusDir(t), "edge")
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(names) < 10 {
		t.Fatalf("edge cases %v: %v", names, err)
	}
	for _, jsonPath := range names {
		name := strings.TrimSuffix(filepath.Base(jsonPath), ".json")
		t.Run(name, func(t *testing.T) {
			jsonText, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			binary, err := os.ReadFile(filepath.Join(dir, name+".binpb"))
			if err != nil {
				t.Fatal(err)
			}
			fromJSON := &runwirev1.RunEvent{}
			if err := protojson.Unmarshal(jsonText, fromJSON); err != nil {
				t.Fatalf("decode JSON: %v", err)
			}
			fromBinary, err := DecodeEvent(binary)
			if err != nil {
				t.Fatalf("decode binary: %v", err)
			}
			if !proto.Equal(fromJSON, fromBinary) {
				t.Errorf("JSON and binary decode differently:\n json   %v\n binary %v", fromJSON, fromBinary)
			}
			reJSON, err := protojson.Marshal(fromBinary)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := canonjson.Canonicalize(jsonText)
			got, _ := canonjson.Canonicalize(reJSON)
			if !bytes.Equal(got, want) {
				t.Errorf("JSON round trip differs:\n got %s\nwant %s", got, want)
			}
			reBinary, err := proto.MarshalOptions{Deterministic: true}.Marshal(fromJSON)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(reBinary, binary) {
				t.Errorf("binary round trip differs:\n got %x\nwant %x", reBinary, binary)
			}
		})
	}
}
