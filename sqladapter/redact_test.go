package sqladapter

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	tests := []struct {
		dsn, want string
		secrets   []string // must not appear in the result
	}{
		// URL form.
		{"postgres://app:s3cret@db:5432/acme?sslmode=disable", "postgres://app:xxxxx@db:5432/acme?sslmode=disable", []string{"s3cret"}},
		{"postgresql://app:p%40ss%2Fw@db/acme", "postgresql://app:xxxxx@db/acme", []string{"p%40ss%2Fw", "p@ss/w"}},
		{"postgres://app:p@ss/w@db/acme", "postgres://app:xxxxx@db/acme", []string{"p@ss/w"}}, // unescaped, as typed by hand
		{"postgres://app@db/acme?password=s3cret&sslmode=require", "postgres://app@db/acme?password=xxxxx&sslmode=require", []string{"s3cret"}},
		{"postgres://app:one@h1,h2/acme?sslpassword=two", "postgres://app:xxxxx@h1,h2/acme?sslpassword=xxxxx", []string{"one", "two"}},
		{"postgres://app@db:5432/acme", "postgres://app@db:5432/acme", nil},
		{"postgres://db/acme", "postgres://db/acme", nil},
		{"sqlserver://sa:Pa55@db:1433?database=acme", "sqlserver://sa:xxxxx@db:1433?database=acme", []string{"Pa55"}},
		// key=value form.
		{"host=db user=app password=s3cret dbname=acme", "host=db user=app password=xxxxx dbname=acme", []string{"s3cret"}},
		{"host=db password='s3 cr\\'et' dbname=acme", "host=db password=xxxxx dbname=acme", []string{"s3 cr\\'et", "s3 cr'et"}},
		{"password = s3cret host=db", "password = xxxxx host=db", []string{"s3cret"}},
		{"PASSWORD=s3cret", "PASSWORD=xxxxx", []string{"s3cret"}},
		{"Server=db;User Id=sa;Password=s3cret;Database=acme", "Server=db;User Id=sa;Password=xxxxx;Database=acme", []string{"s3cret"}},
		{"host=db passfile=/etc/pgpass dbname=acme", "host=db passfile=/etc/pgpass dbname=acme", nil},
		{"host=/var/run/postgresql user=app dbname=acme", "host=/var/run/postgresql user=app dbname=acme", nil},
		{"host=/tmp password=a@b/c", "host=/tmp password=xxxxx", []string{"a@b/c"}},
		{"password=", "password=", nil},
		// go-sql-driver/mysql form.
		{"root:s3cret@tcp(127.0.0.1:3306)/acme?parseTime=true", "root:xxxxx@tcp(127.0.0.1:3306)/acme?parseTime=true", []string{"s3cret"}},
		{"root:p@ss:w/rd@unix(/run/mysqld.sock)/acme", "root:xxxxx@unix(/run/mysqld.sock)/acme", []string{"p@ss:w/rd"}},
		{"root@tcp(127.0.0.1:3306)/acme", "root@tcp(127.0.0.1:3306)/acme", nil},
		{"root:@tcp(127.0.0.1:3306)/acme", "root:@tcp(127.0.0.1:3306)/acme", nil},
		{"/acme", "/acme", nil},
		// SQLite file names hold no password.
		{"file:/tmp/acme.db?_pragma=busy_timeout(5000)", "file:/tmp/acme.db?_pragma=busy_timeout(5000)", nil},
		{"", "", nil},
	}
	for _, tt := range tests {
		got := RedactDSN(tt.dsn)
		if got != tt.want {
			t.Errorf("RedactDSN(%q) = %q; want %q", tt.dsn, got, tt.want)
		}
		for _, s := range tt.secrets {
			if strings.Contains(got, s) {
				t.Errorf("RedactDSN(%q) = %q; still holds %q", tt.dsn, got, s)
			}
		}
	}
}

func TestErrorRedactsCause(t *testing.T) {
	dsn := "postgres://app:p%40ss@db/acme"
	cause := fmt.Errorf("cannot connect with %s (password p@ss): %w", dsn, errTimeoutLike)
	err := newError("acme", "ping", dsn, cause)
	msg := err.Error()
	for _, s := range []string{"p%40ss", "p@ss"} {
		if strings.Contains(msg, s) {
			t.Errorf("Error() = %q; holds the password %q", msg, s)
		}
	}
	if want := `sqladapter: tenant "acme": ping: cannot connect with postgres://app:xxxxx@db/acme (password xxxxx)`; !strings.HasPrefix(msg, want) {
		t.Errorf("Error() = %q; want prefix %q", msg, want)
	}
	if !errors.Is(err, errTimeoutLike) {
		t.Errorf("errors.Is(%v, errTimeoutLike) = false; want true", err)
	}
	for e := error(err); e != nil; e = errors.Unwrap(e) {
		if strings.Contains(e.Error(), "p@ss") {
			t.Errorf("the chain of %v holds the password in %q", err, e.Error())
		}
	}

	// A cause that holds no password is kept as it is.
	plain := errors.New("connection refused")
	if err := newError("acme", "ping", dsn, plain); errors.Unwrap(err) != plain {
		t.Errorf("Unwrap() = %v; want the cause itself", errors.Unwrap(err))
	}
}

var errTimeoutLike = errors.New("i/o timeout")
