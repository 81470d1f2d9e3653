// Command modproxy writes a file-system Go module proxy (for
// GOPROXY=file://DIR) holding every published module of the rescache
// repository at one released version, zipped from the release tags with
// golang.org/x/mod/zip, as the public proxy would serve them. The consumer
// test in .ci/consumer.sh installs the modules from it.
//
// Usage:
//
//	(cd tools && go run ./cmd/modproxy -repo .. -version v0.2.0 -out /tmp/proxy)
package main

import (
	stdzip "archive/zip"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rescache/rescache/tools/internal/workspace"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

func main() {
	repo := flag.String("repo", ".", "the repository root `dir`, with the release tags")
	version := flag.String("version", "", "the released `version`")
	out := flag.String("out", "", "the proxy `dir` to write")
	flag.Parse()
	if *version == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "modproxy: -version and -out are required")
		os.Exit(2)
	}
	if err := run(*repo, *version, *out); err != nil {
		fmt.Fprintln(os.Stderr, "modproxy:", err)
		os.Exit(1)
	}
}

func run(repo, version, out string) error {
	root, err := filepath.Abs(repo)
	if err != nil {
		return err
	}
	mods, err := workspace.Modules(root)
	if err != nil {
		return err
	}
	for _, m := range mods {
		if !m.Published {
			continue
		}
		if err := add(root, m, version, out); err != nil {
			return fmt.Errorf("%s@%s: %w", m.Path, version, err)
		}
		fmt.Printf("%s@%s\n", m.Path, version)
	}
	return nil
}

// add writes m at version, read from its release tag, into the proxy out:
// DIR/<path>/@v/{list,<version>.info,<version>.mod,<version>.zip}.
func add(root string, m workspace.Module, version, out string) error {
	tag := m.TagPrefix() + version
	mv := module.Version{Path: m.Path, Version: version}
	escPath, err := module.EscapePath(m.Path)
	if err != nil {
		return err
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return err
	}
	dir := filepath.Join(out, filepath.FromSlash(escPath), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	subdir := ""
	if m.Dir != "." {
		subdir = m.Dir
	}

	var z bytes.Buffer
	if err := zip.CreateFromVCS(&z, mv, root, tag, subdir); err != nil {
		return err
	}
	if subdir != "" {
		withLicense, err := addRootLicense(z.Bytes(), mv, root, tag)
		if err != nil {
			return err
		}
		z.Reset()
		z.Write(withLicense)
	}
	gomod, err := git(root, "show", tag+":"+strings.TrimPrefix(m.TagPrefix()+"go.mod", "/"))
	if err != nil {
		return err
	}
	when, err := git(root, "log", "-1", "--format=%cI", tag)
	if err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(when)))
	if err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, t.UTC()})
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		escVersion + ".zip":  z.Bytes(),
		escVersion + ".mod":  gomod,
		escVersion + ".info": info,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	list, err := os.OpenFile(filepath.Join(dir, "list"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(list, version); err != nil {
		_ = list.Close() // the write's error is the one to report
		return err
	}
	return list.Close()
}

// addRootLicense returns the zip zb of module mv, a module in a
// subdirectory of the repository, with the repository's LICENSE at tag
// added when the subdirectory has none of its own. The go command does the
// same when it zips a module from a repository
// (cmd/go/internal/modfetch/coderepo.go, "haveLICENSE"), so this is the zip
// the public proxy serves; golang.org/x/mod/zip.CreateFromVCS zips the
// subdirectory only.
func addRootLicense(zb []byte, mv module.Version, root, tag string) ([]byte, error) {
	zr, err := stdzip.NewReader(bytes.NewReader(zb), int64(len(zb)))
	if err != nil {
		return nil, err
	}
	prefix := mv.Path + "@" + mv.Version + "/"
	files := make([]zip.File, 0, len(zr.File)+1)
	for _, f := range zr.File {
		name := strings.TrimPrefix(f.Name, prefix)
		if name == "LICENSE" {
			return zb, nil
		}
		files = append(files, zipEntry{f: f, prefix: prefix})
	}
	license, err := git(root, "show", tag+":LICENSE")
	if err != nil {
		return nil, fmt.Errorf("no LICENSE in %s nor at the repository root: %w", mv.Path, err)
	}
	files = append(files, dataFile{name: "LICENSE", data: license})
	var out bytes.Buffer
	if err := zip.Create(&out, mv, files); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// zipEntry is a file of a module zip, as golang.org/x/mod/zip.Create reads
// files; its path drops the zip's "module@version/" prefix.
type zipEntry struct {
	f      *stdzip.File
	prefix string // "module@version/"
}

func (e zipEntry) Path() string                 { return strings.TrimPrefix(e.f.Name, e.prefix) }
func (e zipEntry) Lstat() (os.FileInfo, error)  { return e.f.FileInfo(), nil }
func (e zipEntry) Open() (io.ReadCloser, error) { return e.f.Open() }

// dataFile is a file of a module zip held in memory.
type dataFile struct {
	name string
	data []byte
}

func (d dataFile) Path() string { return d.name }
func (d dataFile) Lstat() (os.FileInfo, error) {
	return dataInfo{name: d.name, size: int64(len(d.data))}, nil
}
func (d dataFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d.data)), nil }

// dataInfo is the os.FileInfo of a dataFile: a regular file.
type dataInfo struct {
	name string
	size int64
}

func (i dataInfo) Name() string       { return i.name }
func (i dataInfo) Size() int64        { return i.size }
func (i dataInfo) Mode() os.FileMode  { return 0o644 }
func (i dataInfo) ModTime() time.Time { return time.Time{} }
func (i dataInfo) IsDir() bool        { return false }
func (i dataInfo) Sys() any           { return nil }

// git runs git in dir and returns its output.
func git(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
