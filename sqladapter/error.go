package sqladapter

import (
	"errors"
	"strconv"
	"strings"
)

// Error is the error of a failed build: it names the tenant, the step that
// failed and the cause. Match it with errors.As; errors.Is sees through it
// to the cause (context.DeadlineExceeded for a ping that ran out of time,
// the error of Options.DSN, ...).
//
// Its text never contains a password of the tenant's DSN, in the steps
// after Options.DSN returned it: where the cause's text repeats one, the
// cause is replaced by a copy of its text with the password masked, which
// still answers errors.Is like the original but not errors.As. A step that
// panicked is an exception to the last point: its cause still unwraps, with
// errors.As, to the *rescache.PanicError, whose Value is masked in turn.
type Error struct {
	// Tenant is the tenant's key, formatted with Options.Cache.KeyString
	// (default fmt.Sprint).
	Tenant string
	// Op is the step that failed: "pool" (Options.Pool), "dsn"
	// (Options.DSN), "connector" (Options.Connector), "open" (sql.Open),
	// "ping" or "init" (Options.Init).
	Op string
	// Err is the cause. For a step that panicked, it wraps a
	// *rescache.PanicError (find it with errors.As) whose Value is the
	// panic value, masked like the text of the error when that text holds
	// a password: a string then, or for an error value an error that still
	// answers errors.Is like it.
	Err error
}

// Error returns "sqladapter: tenant <tenant>: <op>: <cause>".
func (e *Error) Error() string {
	return "sqladapter: tenant " + strconv.Quote(e.Tenant) + ": " + e.Op + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// newError returns the *Error of tenant for a failure of op, masking in
// err's text the passwords that dsn holds.
func newError(tenant, op, dsn string, err error) *Error {
	if dsn != "" {
		msg := err.Error()
		if red := redactText(msg, dsn); red != msg {
			err = &redactedError{msg: red, err: err}
		}
	}
	return &Error{Tenant: tenant, Op: op, Err: err}
}

// redactedError carries the masked text of an error whose own text holds a
// password. It answers errors.Is like that error but does not unwrap to it,
// so that the password cannot be printed through the chain.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }

func (e *redactedError) Is(target error) bool { return errors.Is(e.err, target) }

// redactText masks in text the whole of dsn and each password dsn holds.
func redactText(text, dsn string) string {
	red, secrets := redact(dsn)
	if red != dsn {
		text = strings.ReplaceAll(text, dsn, red)
	}
	for _, s := range secrets {
		text = strings.ReplaceAll(text, s, redactedMark)
	}
	return text
}
