package workspace

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func write(t *testing.T, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestModules(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "go.work"), "go 1.25.0\n\nuse (\n\t.\n\t./sqladapter\n\t./bench\n)\n")
	write(t, filepath.Join(root, "go.mod"), "module example.com/r\n\ngo 1.25.0\n")
	write(t, filepath.Join(root, "sqladapter", "go.mod"), "module example.com/r/sqladapter\n\ngo 1.25.0\n")
	write(t, filepath.Join(root, "bench", "go.mod"), UnpublishedMarker+" (benchmarks)\n\nmodule example.com/r/bench\n\ngo 1.25.0\n")

	got, err := Modules(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Module{
		{".", "example.com/r", true},
		{"sqladapter", "example.com/r/sqladapter", true},
		{"bench", "example.com/r/bench", false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Modules() = %+v; want %+v", got, want)
	}
	if p := got[0].TagPrefix(); p != "" {
		t.Errorf("root TagPrefix() = %q; want none", p)
	}
	if p := got[1].TagPrefix(); p != "sqladapter/" {
		t.Errorf("sqladapter TagPrefix() = %q; want sqladapter/", p)
	}
}

func TestModulesOutside(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "go.work"), "go 1.25.0\n\nuse ../other\n")
	if _, err := Modules(root); err == nil {
		t.Error("Modules with a use outside the repository: no error")
	}
}
