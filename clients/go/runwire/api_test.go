package runwire

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The package's exported surface, locked: growing or shrinking it is a
// decision, made here on purpose.
var exported = []string{
	"CheckKnown", "Checker", "DecodeEvent",
	"DefaultInitialBackoff", "DefaultMaxBackoff", "DefaultMaxServerDelay", "DefaultRetryTimeout",
	"ErrSeqGap", "Error", "ErrorDomain", "FieldViolation", "FromError", "IsFiltered", "NewChecker", "NewFilteredChecker",
	"RuleAttemptOpen", "RuleAttemptUnclosed", "RuleItemOutsideFrame", "RuleItemUnclosed", "RuleOutputOutsideAttempt", "RuleRunCompletedLast",
	"RuleRunIDStable", "RuleRunStartedFirst", "RuleSeqGapless", "RuleSeqStart",
	"RuleSkipInsideAttempt", "RuleTerminalOutsideAttempt",
	"RunEnd", "UnknownEventError", "Violation", "Watch", "WatchEvents", "WatchOptions", "WatchedEvent",
}

func TestExportedNamesAreLocked(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() {
					got = append(got, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							got = append(got, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								got = append(got, n.Name)
							}
						}
					}
				}
			}
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(exported))
	if !slices.Equal(got, want) {
		t.Errorf("exported names\n got %v\nwant %v", got, want)
	}
}
