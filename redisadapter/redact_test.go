package redisadapter

import "testing"

func TestRedact(t *testing.T) {
	tests := []struct {
		msg     string
		secrets []string
		want    string
	}{
		{"dial tcp 10.0.0.7:6379: connection refused", []string{"pw"}, "dial tcp 10.0.0.7:6379: connection refused"},
		{"AUTH hunter2 failed", []string{"hunter2", ""}, "AUTH xxxxx failed"},
		{`parse "redis://u:hunter2@h:x/0": invalid port`, nil, `parse "redis://u:xxxxx@h:x/0": invalid port`},
		{"rediss://:hunter2@h:6380 and redis://v:p%40ss@h2:1", nil, "rediss://:xxxxx@h:6380 and redis://v:xxxxx@h2:1"},
		{"redis://user@h:6379 has no password", nil, "redis://user@h:6379 has no password"},
		{"unix:///run/redis.sock", nil, "unix:///run/redis.sock"},
	}
	for _, tt := range tests {
		if got := redact(tt.msg, tt.secrets); got != tt.want {
			t.Errorf("redact(%q, %q) = %q; want %q", tt.msg, tt.secrets, got, tt.want)
		}
	}
}
