package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startServer runs the server with args on a loopback port, as main does,
// and returns its base URL and its log; it stops the server at the end of
// the test.
func startServer(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- run(ctx, append([]string{"-addr", "127.0.0.1:0"}, args...), logs, func(addr string) { addrCh <- addr })
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case addr := <-addrCh:
		return "http://" + addr, logs
	case err := <-done:
		t.Fatalf("run() = %v before listening; logs:\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not start within 30s; logs:\n%s", logs.String())
	}
	return "", nil
}

// do sends a request with the given content type and body and returns the
// status and the body of the answer.
func do(t *testing.T, method, url, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// POST bodies that are too large, not JSON, or JSON with more than the
// note are refused with the status that says why, over real HTTP.
func TestPostValidation(t *testing.T) {
	base, _ := startServer(t, "-data", t.TempDir())
	notes := base + "/t/acme/notes"
	big := `{"body": "` + strings.Repeat("x", 70<<10) + `"}`
	for _, tc := range []struct {
		name, contentType, body string
		want                    int
	}{
		{"ok", "application/json", `{"body": "hello"}`, http.StatusCreated},
		{"ok with charset", "application/json; charset=utf-8", `{"body": "hello"}`, http.StatusCreated},
		{"too large", "application/json", big, http.StatusRequestEntityTooLarge},
		{"unknown field", "application/json", `{"body": "hello", "author": "eve"}`, http.StatusBadRequest},
		{"trailing data", "application/json", `{"body": "hello"} {"body": "again"}`, http.StatusBadRequest},
		{"trailing garbage", "application/json", `{"body": "hello"}x`, http.StatusBadRequest},
		{"empty body", "application/json", `{"body": ""}`, http.StatusBadRequest},
		{"not json", "application/json", `body=hello`, http.StatusBadRequest},
		{"form", "application/x-www-form-urlencoded", `{"body": "hello"}`, http.StatusUnsupportedMediaType},
		{"no content type", "", `{"body": "hello"}`, http.StatusUnsupportedMediaType},
		{"text", "text/plain", `{"body": "hello"}`, http.StatusUnsupportedMediaType},
	} {
		if got, body := do(t, "POST", notes, tc.contentType, tc.body); got != tc.want {
			t.Errorf("%s: POST = %d %q; want %d", tc.name, got, body, tc.want)
		}
	}
	// Only the two good notes were stored.
	if got, body := do(t, "GET", notes, "", ""); got != http.StatusOK || strings.Count(body, `"id"`) != 2 {
		t.Errorf("GET = %d %s; want the 2 notes posted", got, body)
	}
}

var requestIDRE = regexp.MustCompile(`request id ([0-9a-f]{16})`)

// check503 checks that a 503 answer carries a request id and none of
// secrets, and that the log has the cause under that id.
func check503(t *testing.T, code int, body string, logs *syncBuffer, secrets ...string) {
	t.Helper()
	if code != http.StatusServiceUnavailable {
		t.Fatalf("status %d %q; want 503", code, body)
	}
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("503 body %q contains %q", body, s)
		}
	}
	m := requestIDRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("503 body %q has no request id", body)
	}
	var logged bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "request_id="+m[1]) && strings.Contains(line, "err=") {
			logged = true
		}
	}
	if !logged {
		t.Errorf("no log line with request_id=%s and the error; logs:\n%s", m[1], logs.String())
	}
}

// A tenant whose database cannot be opened gets a short 503 with a request
// id; the cause, which names files, users, hosts or databases, is only in
// the log. On SQLite always, and on PostgreSQL with a user that does not
// exist when RESCACHE_POSTGRES_DSN is set.
func TestUnavailableTenantHidesDetail(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		// A directory where the tenant's database file should be.
		if err := os.MkdirAll(filepath.Join(dir, "broken.db"), 0o755); err != nil {
			t.Fatal(err)
		}
		base, logs := startServer(t, "-data", dir)
		code, body := do(t, "GET", base+"/t/broken/notes", "", "")
		check503(t, code, body, logs, dir, "broken.db", "sqlite", "sqladapter")
	})
	dsn := os.Getenv("RESCACHE_POSTGRES_DSN")
	if dsn == "" {
		return
	}
	t.Run("postgres", func(t *testing.T) {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		var buf [4]byte
		rand.Read(buf[:])
		user := "nobody_" + hex.EncodeToString(buf[:])
		u.User = url.UserPassword(user, "s3cret-"+user)
		// -max-conns: the budget cannot be derived without a valid user.
		base, logs := startServer(t, "-postgres", u.String(), "-max-conns", "4")
		code, body := do(t, "POST", base+"/t/acme/notes", "application/json", `{"body": "hi"}`)
		check503(t, code, body, logs, user, "s3cret", u.Hostname(), "tenant_acme", "password", "pgx", "SQLSTATE")
		if strings.Contains(logs.String(), "s3cret") {
			t.Errorf("the log holds the password:\n%s", logs.String())
		}
	})
}
