package redisadapter

import (
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// ErrNilOptions is the cause of a [*BuildError] when the options function
// returned neither options nor an error.
var ErrNilOptions = errors.New("redisadapter: options function returned nil options")

// ErrInvalidAddr is the cause of a [*BuildError] when a tenant's address
// cannot be dialled as written: a TCP address that is a URL, that has no
// port or a port outside 1-65535, an empty entry in UniversalOptions.Addrs,
// an empty socket path, or an unknown network. Addresses are
// not checked when the options set a Dialer.
var ErrInvalidAddr = errors.New("redisadapter: invalid address")

// BuildError is the error of a build that did not produce a tenant's client:
// the options function failed or returned nil, an address was invalid, or
// the new client did not answer PING within the ping timeout. A client
// created by the build is closed before BuildError is returned.
//
// Its message names the tenant and the cause. Any password of the tenant's
// options (Password, SentinelPassword) and the password of any URL in the
// message (redis://user:password@host) are replaced by "xxxxx". Match the
// cause with errors.Is ([ErrNilOptions], [ErrInvalidAddr],
// [context.DeadlineExceeded], a go-redis error) and get the BuildError with
// errors.As.
type BuildError struct {
	// Tenant is the tenant's key as the cache's KeyString formats it
	// (fmt.Sprint when KeyString is nil).
	Tenant string

	// Addr is the tenant's server address, or the comma-separated addresses
	// of a cluster or of sentinels. It is empty when the build failed before
	// the options were known.
	Addr string

	// Err is the cause. Its own message is not redacted: log the BuildError,
	// not Err.
	Err error

	// secrets are the passwords to redact from the message.
	secrets []string
}

// Error returns "redisadapter: tenant <quoted key> [at <addr>]: <cause>" with
// passwords redacted.
func (e *BuildError) Error() string {
	var b strings.Builder
	b.WriteString("redisadapter: tenant ")
	b.WriteString(strconv.Quote(e.Tenant))
	if e.Addr != "" {
		b.WriteString(" at ")
		b.WriteString(e.Addr)
	}
	b.WriteString(": ")
	if e.Err == nil {
		b.WriteString("build failed")
	} else {
		// The sentinel errors of this package start with its name,
		// which the message already has.
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "redisadapter: "))
	}
	return redact(b.String(), e.secrets)
}

// Unwrap returns the cause.
func (e *BuildError) Unwrap() error { return e.Err }

// redacted replaces a password in a message.
const redacted = "xxxxx"

// urlPassword matches the user-info password of a URL ("redis://user:pw@")
// anywhere in a message; group 1 is everything before the password.
var urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:)[^@\s]*@`)

// redact returns msg with every non-empty secret and every URL password
// replaced by [redacted].
func redact(msg string, secrets []string) string {
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
	}
	return urlPassword.ReplaceAllString(msg, "${1}"+redacted+"@")
}

// checkAddr reports, wrapped in [ErrInvalidAddr], why go-redis could not
// dial addr on network. An empty address is valid: go-redis dials its
// default, localhost:6379. network "" means tcp, or unix for an address
// that starts with "/", as in go-redis.
func checkAddr(network, addr string) error {
	if network == "" {
		network = "tcp"
		if strings.HasPrefix(addr, "/") {
			network = "unix"
		}
	}
	switch network {
	case "unix":
		if addr == "" {
			return invalidAddr(addr, "empty unix socket path")
		}
		return nil
	case "tcp", "tcp4", "tcp6":
		if addr == "" {
			return nil
		}
		if strings.Contains(addr, "://") {
			return invalidAddr(addr, "a URL, not host:port (parse URLs with redis.ParseURL)")
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			reason := err.Error()
			var ae *net.AddrError
			if errors.As(err, &ae) {
				reason = ae.Err
			}
			return invalidAddr(addr, reason)
		}
		if port == "" {
			return invalidAddr(addr, "missing port")
		}
		if isDigits(port) {
			if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
				return invalidAddr(addr, "port out of range 1-65535")
			}
		}
		return nil
	default:
		return invalidAddr(addr, "unknown network "+strconv.Quote(network))
	}
}

func invalidAddr(addr, reason string) error {
	return &addrError{addr: addr, reason: reason}
}

// addrError is an invalid address and the reason; it matches
// [ErrInvalidAddr].
type addrError struct {
	addr, reason string
}

func (e *addrError) Error() string {
	return "invalid address " + strconv.Quote(e.addr) + ": " + e.reason
}

func (e *addrError) Is(target error) bool { return target == ErrInvalidAddr }

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
