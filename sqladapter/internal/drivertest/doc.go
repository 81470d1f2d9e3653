// Package drivertest holds the tests of sqladapter that need real
// database/sql drivers: pgx for PostgreSQL, go-sql-driver/mysql for MySQL
// and MariaDB, and modernc.org/sqlite. They live in a module of their own so
// that sqladapter's go.mod requires only rescache: a program that uses
// sqladapter gets no driver it did not import itself.
//
// With no environment the tests run on SQLite; RESCACHE_POSTGRES_DSN and
// RESCACHE_MYSQL_DSN point them at real servers (see the repository's
// README.md), and a variable that is set but unreachable fails them.
package drivertest
