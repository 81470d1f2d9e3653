package rescache

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestLifecycleLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(func(_ context.Context, key string) (string, error) {
		if key == "tenant-panics" {
			panic("boom")
		}
		return key, nil
	}, &Options[string, string]{
		MaxEntries: 1,
		Logger:     log,
		KeyString:  func(k string) string { return "redacted-" + k[len(k)-2:] },
		Close: func(key, _ string) error {
			if key == "tenant-b2" {
				return errors.New("close failed")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Get(ctx, "tenant-a1")
	c.Get(ctx, "tenant-b2") // evicts a1
	c.Get(ctx, "tenant-panics")
	c.Shutdown(ctx) // closes b2, which fails, and waits for the hooks of a1

	out := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="rescache: build started" key=redacted-a1`,
		`level=DEBUG msg="rescache: build finished" key=redacted-a1 duration=`,
		`level=DEBUG msg="rescache: evicted" key=redacted-a1 reason=capacity`,
		`level=DEBUG msg="rescache: closed" key=redacted-a1 duration=`,
		`level=WARN msg="rescache: build panicked" key=redacted-cs error="rescache: build of redacted-cs panicked: boom"`,
		`level=WARN msg="rescache: close failed" key=redacted-b2 error="close failed"`,
		`level=DEBUG msg="rescache: evicted" key=redacted-b2 reason=closed`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if strings.Contains(out, "tenant-") {
		t.Errorf("a key was logged without KeyString:\n%s", out)
	}
	if t.Failed() {
		t.Logf("logs:\n%s", out)
	}
}
