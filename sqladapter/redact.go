package sqladapter

import (
	"net/url"
	"slices"
	"strings"
)

// redactedMark replaces a password; it is what net/url's URL.Redacted uses.
const redactedMark = "xxxxx"

// passwordKeys are the parameter names whose value is masked, compared
// without regard to case.
var passwordKeys = []string{"password", "passwd", "pwd", "pass", "sslpassword"}

// RedactDSN returns dsn with every password it holds replaced by "xxxxx",
// for logs and error messages. It understands the three common forms:
//
//	postgres://user:secret@host:5432/db?sslmode=disable   (URL userinfo)
//	host=db user=app password='s3 cret' dbname=app        (key=value, quoted or not)
//	user:secret@tcp(db:3306)/app?parseTime=true            (go-sql-driver/mysql)
//
// and parameters named password, passwd, pwd, pass or sslpassword in any of
// them (?password=..., ;Password=...). A DSN that holds no password is
// returned as it is. It masks rather than parses: a DSN the driver would
// reject may still be masked, and a DSN of another form may keep its
// secret, so do not rely on it for input you do not control.
func RedactDSN(dsn string) string {
	red, _ := redact(dsn)
	return red
}

// redact returns dsn with its passwords masked, and the passwords as they
// appear in dsn and, where different, as the driver decodes them.
func redact(dsn string) (string, []string) {
	var secrets []string
	add := func(raw, decoded string) {
		for _, s := range []string{raw, decoded} {
			if s != "" && s != redactedMark && !slices.Contains(secrets, s) {
				secrets = append(secrets, s)
			}
		}
	}
	out := dsn
	if i := strings.Index(out, "://"); i > 0 && isScheme(out[:i]) {
		out = redactURLUserinfo(out, i+len("://"), add)
	} else {
		out = redactMySQLUserinfo(out, add)
	}
	out = redactParams(out, add)
	return out, secrets
}

// isScheme reports whether s is a URL scheme: a letter, then letters,
// digits, '+', '-' or '.'.
func isScheme(s string) bool {
	for i, r := range s {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case i > 0 && ('0' <= r && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// redactURLUserinfo masks the password of scheme://user:password@host...,
// where the userinfo ends at the last '@' before any '?' or '#', so that a
// password with an unescaped '/' or '@' is masked whole.
func redactURLUserinfo(dsn string, start int, add func(raw, decoded string)) string {
	rest := dsn[start:]
	end := len(rest)
	if q := strings.IndexAny(rest, "?#"); q >= 0 {
		end = q
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return dsn
	}
	colon := strings.Index(rest[:at], ":")
	if colon < 0 {
		return dsn
	}
	pw := rest[colon+1 : at]
	if pw == "" {
		return dsn
	}
	decoded, err := url.PathUnescape(pw)
	if err != nil {
		decoded = pw
	}
	add(pw, decoded)
	return dsn[:start] + rest[:colon+1] + redactedMark + rest[at:]
}

// redactMySQLUserinfo masks the password of user:password@net(addr)/db,
// found as go-sql-driver/mysql finds it: the userinfo ends at the last '@'
// before the last '/'.
func redactMySQLUserinfo(dsn string, add func(raw, decoded string)) string {
	slash := strings.LastIndex(dsn, "/")
	if slash < 0 {
		return dsn
	}
	at := strings.LastIndex(dsn[:slash], "@")
	if at < 0 {
		return dsn
	}
	userinfo := dsn[:at]
	if strings.ContainsAny(userinfo, "= \t\n") { // a key=value DSN, not userinfo
		return dsn
	}
	colon := strings.Index(userinfo, ":")
	if colon < 0 || colon+1 == at {
		return dsn
	}
	add(dsn[colon+1:at], "")
	return dsn[:colon+1] + redactedMark + dsn[at:]
}

// redactParams masks the value of every password parameter: key=value
// pairs separated by spaces (libpq), '&' or '?' (URL and mysql queries) or
// ';' (ODBC-style), with optional spaces around '=' and values in single or
// double quotes with backslash escapes.
func redactParams(dsn string, add func(raw, decoded string)) string {
	var b strings.Builder
	i := 0
	for i < len(dsn) {
		keyStart, keyEnd, ok := nextPasswordKey(dsn, i)
		if !ok {
			break
		}
		j := keyEnd
		for j < len(dsn) && dsn[j] == ' ' {
			j++
		}
		if j >= len(dsn) || dsn[j] != '=' {
			b.WriteString(dsn[i:keyEnd])
			i = keyEnd
			continue
		}
		j++
		for j < len(dsn) && dsn[j] == ' ' {
			j++
		}
		valStart := j
		var decoded string
		if j < len(dsn) && (dsn[j] == '\'' || dsn[j] == '"') {
			quote := dsn[j]
			var d strings.Builder
			j++
			for j < len(dsn) && dsn[j] != quote {
				if dsn[j] == '\\' && j+1 < len(dsn) {
					j++
				}
				d.WriteByte(dsn[j])
				j++
			}
			if j < len(dsn) {
				j++ // closing quote
			}
			decoded = d.String()
		} else {
			for j < len(dsn) && !isParamSep(dsn[j]) {
				j++
			}
			decoded = dsn[valStart:j]
			if u, err := url.QueryUnescape(decoded); err == nil {
				decoded = u
			}
		}
		raw := dsn[valStart:j]
		b.WriteString(dsn[i:keyStart])
		b.WriteString(dsn[keyStart:valStart])
		if raw != "" {
			add(raw, decoded)
			b.WriteString(redactedMark)
		}
		i = j
	}
	b.WriteString(dsn[i:])
	return b.String()
}

// nextPasswordKey finds, from i on, the next password key that starts dsn
// or follows a parameter separator.
func nextPasswordKey(dsn string, i int) (start, end int, ok bool) {
	for k := i; k < len(dsn); k++ {
		if k > 0 && !isParamSep(dsn[k-1]) {
			continue
		}
		for _, key := range passwordKeys {
			if len(dsn)-k >= len(key) && strings.EqualFold(dsn[k:k+len(key)], key) {
				e := k + len(key)
				if e == len(dsn) || dsn[e] == '=' || dsn[e] == ' ' {
					return k, e, true
				}
			}
		}
	}
	return 0, 0, false
}

func isParamSep(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', ';', '&', '?':
		return true
	}
	return false
}
