package consul

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// Over a unix socket too (for which consul/api would build a client of
// its own), every request carries the token the file holds at that
// moment; an empty file falls back to the static token.
func TestTokenFromFileOverUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get(tokenHeader))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	file := filepath.Join(dir, "token")
	write := func(tok string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first-token\n")
	cat, err := Open(Config{Address: "unix://" + sock, Token: "static-token", TokenFile: file}, "n1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"first-token\n", "second-token", " \n"} {
		write(tok)
		if _, err := cat.Owned(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"first-token", "second-token", "static-token"}; !slices.Equal(seen, want) {
		t.Fatalf("tokens sent %q, want %q", seen, want)
	}
}
