package contender

import (
	"context"
	"testing"
	"time"
)

func TestSeedLoadConnects(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		tenants int
		want    []time.Duration
	}{
		{1, []time.Duration{250 * ms}},
		{2, []time.Duration{50 * ms, 250 * ms}},
		{4, []time.Duration{50 * ms, 116*ms + 666666, 183*ms + 333333, 250 * ms}},
	}
	for _, tt := range tests {
		l := DefaultSeedLoad
		l.Tenants = tt.tenants
		got := l.Connects()
		if len(got) != len(tt.want) {
			t.Fatalf("Connects() with %d tenants = %v; want %v", tt.tenants, got, tt.want)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("Connects() with %d tenants = %v; want %v", tt.tenants, got, tt.want)
				break
			}
		}
	}
}

func TestSeedLoadValidate(t *testing.T) {
	bad := []SeedLoad{
		{Requests: 0, Tenants: 1, InFlight: 1},
		{Requests: 1, Tenants: 0, InFlight: 1},
		{Requests: 1, Tenants: 1, InFlight: 0},
		{Requests: 1, Tenants: 1, InFlight: 1, Fastest: 2, Slowest: 1},
	}
	for _, l := range bad {
		if err := l.Validate(); err == nil {
			t.Errorf("%+v.Validate() = nil; want an error", l)
		}
		if _, err := l.Run(context.Background(), Channels); err == nil {
			t.Errorf("%+v.Run() returned no error; want one", l)
		}
	}
	if err := DefaultSeedLoad.Validate(); err != nil {
		t.Errorf("DefaultSeedLoad.Validate() = %v; want nil", err)
	}
}

// TestSeedLoadBound checks the premise of the seed table: the channels
// strategy serves the load in about the slowest connect, with one connect
// per tenant.
func TestSeedLoadBound(t *testing.T) {
	l := SeedLoad{Requests: 100, Tenants: 4, InFlight: 20, Fastest: 5 * time.Millisecond, Slowest: 20 * time.Millisecond}
	res, err := l.Run(context.Background(), Channels)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connects != 4 || res.Errors != 0 {
		t.Errorf("Run(Channels) = %+v; want 4 connects and no errors", res)
	}
	if res.Wall < l.Slowest {
		t.Errorf("Run(Channels) took %v; want at least the slowest connect, %v", res.Wall, l.Slowest)
	}
}
