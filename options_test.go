package rescache

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Tests of New's validation of Options and of the clock's bounds.

// New validates and copies.
func TestNewValidates(t *testing.T) {
	build := func(context.Context, string) (int, error) { return 0, nil }
	if _, err := New[string, int](nil, nil); err == nil || !strings.Contains(err.Error(), "build function is nil") {
		t.Errorf("New(nil build) = %v", err)
	}
	for _, tc := range []struct {
		name string
		opts Options[string, int]
	}{
		{"MaxEntries", Options[string, int]{MaxEntries: -1}},
		{"IdleTimeout", Options[string, int]{IdleTimeout: -time.Second}},
		{"MaxLifetime", Options[string, int]{MaxLifetime: -1}},
		{"BuildTimeout", Options[string, int]{BuildTimeout: -1}},
		{"MaxConcurrentBuilds", Options[string, int]{MaxConcurrentBuilds: -2}},
		{"ErrorTTL", Options[string, int]{ErrorTTL: -1}},
		{"MaxErrorEntries", Options[string, int]{MaxErrorEntries: -1}},
		{"HealthCheckInterval", Options[string, int]{HealthCheckInterval: time.Second}},
	} {
		_, err := New(build, &tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("New with bad %s = %v; want an error naming it", tc.name, err)
		}
	}
	opts := Options[string, int]{MaxEntries: 5}
	c, err := New(build, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if opts.MaxEntries != 5 || opts.MaxErrorEntries != 0 || opts.ClockResolution != 0 || opts.KeyString != nil {
		t.Errorf("New modified the caller's Options: %+v", opts)
	}
}

func TestClockResolutionIsBounded(t *testing.T) {
	build := func(context.Context, string) (string, error) { return "", nil }
	for _, d := range []time.Duration{time.Nanosecond, time.Millisecond - 1, time.Minute + 1, 1<<63 - 1} {
		if _, err := New(build, &Options[string, string]{IdleTimeout: time.Hour, ClockResolution: d}); err == nil {
			t.Errorf("New with ClockResolution %v succeeded; want an error", d)
		}
	}
	for _, d := range []time.Duration{time.Millisecond, time.Minute} {
		c, err := New(build, &Options[string, string]{IdleTimeout: time.Hour, ClockResolution: d})
		if err != nil {
			t.Errorf("New with ClockResolution %v: %v", d, err)
			continue
		}
		c.Close()
	}
}
