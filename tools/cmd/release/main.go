// Command release prepares a release of every published module of the
// rescache repository at one version: it makes each module of go.work
// require its sibling modules at that version, commits the go.mod files,
// and tags the commit once per published module (v0.2.0 for the core,
// sqladapter/v0.2.0 and so on). It pushes nothing; it prints the push
// command. RELEASING.md describes the whole procedure.
//
// Usage, from the repository root:
//
//	(cd tools && go run ./cmd/release -dir .. -version v0.2.0)          # bump, commit, tag
//	(cd tools && go run ./cmd/release -dir .. -version v0.2.0 -n)       # only show what it would do
//
// The work tree must be clean, and no tag of the version may exist yet.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/rescache/rescache/tools/internal/workspace"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
)

func main() {
	dir := flag.String("dir", ".", "the repository root `dir`")
	version := flag.String("version", "", "the release `version`, vMAJOR.MINOR.PATCH (v0 or v1)")
	dryRun := flag.Bool("n", false, "print what would change and the tags, and change nothing")
	flag.Parse()
	if err := run(*dir, *version, *dryRun); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(dir, version string, dryRun bool) error {
	if err := checkVersion(version); err != nil {
		return err
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	mods, err := workspace.Modules(root)
	if err != nil {
		return err
	}
	if !dryRun {
		if out, err := git(root, "status", "--porcelain"); err != nil {
			return err
		} else if out != "" {
			return fmt.Errorf("the work tree of %s is not clean:\n%s", root, out)
		}
	}
	var tags []string
	for _, m := range mods {
		if !m.Published {
			continue
		}
		tag := m.TagPrefix() + version
		if _, err := git(root, "rev-parse", "-q", "--verify", "refs/tags/"+tag); err == nil {
			return fmt.Errorf("tag %s exists already", tag)
		}
		tags = append(tags, tag)
	}

	// Every module requires its siblings at the release version.
	paths := make(map[string]bool)
	for _, m := range mods {
		paths[m.Path] = true
	}
	var changed []string
	for _, m := range mods {
		name := m.GoMod(root)
		data, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		f, err := modfile.Parse(name, data, nil)
		if err != nil {
			return err
		}
		edited := false
		for _, r := range f.Require {
			if paths[r.Mod.Path] && r.Mod.Version != version {
				fmt.Printf("%s: require %s %s -> %s\n", filepath.ToSlash(filepath.Join(m.Dir, "go.mod")), r.Mod.Path, r.Mod.Version, version)
				if err := f.AddRequire(r.Mod.Path, version); err != nil {
					return err
				}
				edited = true
			}
		}
		if !edited {
			continue
		}
		f.Cleanup()
		out, err := f.Format()
		if err != nil {
			return err
		}
		if bytes.Equal(out, data) {
			continue
		}
		changed = append(changed, name)
		if !dryRun {
			if err := os.WriteFile(name, out, 0o644); err != nil {
				return err
			}
		}
	}
	if dryRun {
		fmt.Printf("would commit %d go.mod files and tag: %s\n", len(changed), strings.Join(tags, " "))
		return nil
	}
	if len(changed) > 0 {
		if _, err := git(root, append([]string{"add", "--"}, changed...)...); err != nil {
			return err
		}
		if _, err := git(root, "commit", "-q", "-m", "release "+version+": modules require "+version+" of each other"); err != nil {
			return err
		}
	}
	for _, tag := range tags {
		if _, err := git(root, "tag", "-a", "-m", "rescache "+tag, tag); err != nil {
			return err
		}
		fmt.Println("tagged", tag)
	}
	fmt.Printf("\nto publish: git push origin HEAD %s\n", strings.Join(tags, " "))
	return nil
}

// checkVersion accepts a canonical semantic version without build metadata
// and with major version 0 or 1 (the module paths have no /vN suffix).
func checkVersion(v string) error {
	if !semver.IsValid(v) || semver.Canonical(v) != v {
		return fmt.Errorf("version %q is not of the form vMAJOR.MINOR.PATCH", v)
	}
	if m := semver.Major(v); m != "v0" && m != "v1" {
		return fmt.Errorf("version %s needs module paths ending in /%s; they have none", v, m)
	}
	return nil
}

// git runs git in dir and returns its trimmed output.
func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
