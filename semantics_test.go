package rescache

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSemanticsTableIsCovered keeps README.md's Semantics table and the
// index of the tests that check each row (the comment at the top of
// semantics_index_test.go) in step: every row of the table has tests listed, every
// row listed is a row of the table, and every test listed exists.
func TestSemanticsTableIsCovered(t *testing.T) {
	rows := semanticsRows(t)
	index := semanticsIndex(t)
	tests := testFuncs(t)
	for _, row := range rows {
		if len(index[row]) == 0 {
			t.Errorf("Semantics row %q has no test listed in semantics_index_test.go's index", row)
		}
	}
	inTable := make(map[string]bool)
	for _, row := range rows {
		inTable[row] = true
	}
	for row, names := range index {
		if !inTable[row] {
			t.Errorf("the index lists row %q, which README.md's Semantics table does not have", row)
		}
		for _, name := range names {
			if !tests[name] {
				t.Errorf("the index lists %s for row %q; no such test", name, row)
			}
		}
	}
}

// semanticsRows returns the first cell of each row of the table under
// README.md's "## Semantics" heading.
func semanticsRows(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []string
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Semantics"
		case in && strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| |") && !strings.HasPrefix(line, "| ---"):
			cells := strings.Split(line, "|")
			rows = append(rows, strings.TrimSpace(cells[1]))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) < 10 {
		t.Fatalf("found %d rows under ## Semantics in README.md; the parser is out of step with it", len(rows))
	}
	return rows
}

// semanticsIndex parses the index in semantics_index_test.go's top comment: a
// line "//\t<row, padded to 15 columns><tests>", continued by lines that
// start with spaces.
func semanticsIndex(t *testing.T) map[string][]string {
	t.Helper()
	src, err := os.ReadFile("semantics_index_test.go")
	if err != nil {
		t.Fatal(err)
	}
	testName := regexp.MustCompile(`\bTest\w+`)
	index := make(map[string][]string)
	row := ""
	started := false
	for _, line := range strings.Split(string(src), "\n") {
		if strings.Contains(line, "Where each row of README.md's Semantics table is checked") {
			started = true
			continue
		}
		if !started {
			continue
		}
		if !strings.HasPrefix(line, "//\t") {
			if row != "" {
				break // the end of the index
			}
			continue
		}
		body := strings.TrimPrefix(line, "//\t")
		if !strings.HasPrefix(body, " ") {
			if len(body) < 15 {
				t.Fatalf("index line %q: want the row name padded to 15 columns", line)
			}
			row = strings.TrimSpace(body[:15])
			body = body[15:]
		}
		index[row] = append(index[row], testName.FindAllString(body, -1)...)
	}
	if len(index) == 0 {
		t.Fatal("no index found in semantics_index_test.go")
	}
	return index
}

// testFuncs returns the names of the test functions of the package.
func testFuncs(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	names := make(map[string]bool)
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Test") {
				names[fn.Name.Name] = true
			}
		}
	}
	return names
}
