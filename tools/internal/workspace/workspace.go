// Package workspace finds the modules of the rescache repository from its
// go.work file, so that the release tools never keep a list of their own.
package workspace

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/mod/modfile"
)

// UnpublishedMarker is the comment line that keeps a module of the
// workspace from being tagged and published: a go.mod holding this line
// (before or after the module directive) belongs to a module used only from
// a checkout, such as the benchmarks or the release tools.
const UnpublishedMarker = "// rescache-release: unpublished"

// Module is one module of the workspace.
type Module struct {
	// Dir is the module's directory relative to the repository root, with
	// slashes: "." for the root module, "sqladapter" for the others.
	Dir string
	// Path is the module path from its go.mod.
	Path string
	// Published reports whether the module is tagged and published: every
	// module of go.work but those whose go.mod has UnpublishedMarker.
	Published bool
}

// TagPrefix returns the prefix of the module's release tags: "" for the
// root module, "sqladapter/" for the module in sqladapter. A tag is the
// prefix followed by the version.
func (m Module) TagPrefix() string {
	if m.Dir == "." {
		return ""
	}
	return m.Dir + "/"
}

// GoMod returns the path of the module's go.mod under root.
func (m Module) GoMod(root string) string {
	return filepath.Join(root, filepath.FromSlash(m.Dir), "go.mod")
}

// Modules returns the modules listed in root/go.work, in its order.
func Modules(root string) ([]Module, error) {
	name := filepath.Join(root, "go.work")
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("workspace: %w", err)
	}
	wf, err := modfile.ParseWork(name, data, nil)
	if err != nil {
		return nil, fmt.Errorf("workspace: %w", err)
	}
	var mods []Module
	for _, u := range wf.Use {
		dir := path.Clean(filepath.ToSlash(u.Path))
		if path.IsAbs(dir) || dir == ".." || strings.HasPrefix(dir, "../") {
			return nil, fmt.Errorf("workspace: %s uses %s, outside the repository", name, u.Path)
		}
		m := Module{Dir: dir}
		data, err := os.ReadFile(m.GoMod(root))
		if err != nil {
			return nil, fmt.Errorf("workspace: %w", err)
		}
		f, err := modfile.ParseLax(m.GoMod(root), data, nil)
		if err != nil {
			return nil, fmt.Errorf("workspace: %w", err)
		}
		if f.Module == nil {
			return nil, fmt.Errorf("workspace: %s has no module directive", m.GoMod(root))
		}
		m.Path = f.Module.Mod.Path
		m.Published = !hasMarker(data)
		mods = append(mods, m)
	}
	return mods, nil
}

// hasMarker reports whether a go.mod holds UnpublishedMarker on a line of
// its own.
func hasMarker(gomod []byte) bool {
	s := bufio.NewScanner(bytes.NewReader(gomod))
	for s.Scan() {
		if strings.HasPrefix(strings.TrimSpace(s.Text()), UnpublishedMarker) {
			return true
		}
	}
	return false
}
