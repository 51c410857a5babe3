package pgtest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestChildSchema is the test TestWithoutServer runs in a child process
// with an unreachable server. It does nothing in a normal run.
func TestChildSchema(t *testing.T) {
	if os.Getenv("PGTEST_CHILD") != "1" {
		t.Skip("only runs as the child of TestWithoutServer")
	}
	Schema(t)
	t.Log("REACHED: Schema returned")
}

// TestWithoutServer checks what Schema does when no server answers: the
// test skips with a sentence on how to run it, or fails when
// KONTEXT_REQUIRE_POSTGRES=1.
func TestWithoutServer(t *testing.T) {
	if os.Getenv("PGTEST_CHILD") == "1" {
		t.Skip("parent only")
	}
	tests := []struct {
		name    string
		require string
		wantErr bool
		want    []string
	}{
		{"skips", "", false, []string{"--- SKIP: TestChildSchema", "start PostgreSQL and set KONTEXT_TEST_DATABASE_URL="}},
		{"fails when required", "1", true, []string{"--- FAIL: TestChildSchema", "KONTEXT_REQUIRE_POSTGRES=1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestChildSchema$", "-test.v")
			cmd.Env = append(os.Environ(), "PGTEST_CHILD=1", "KONTEXT_REQUIRE_POSTGRES="+tc.require,
				"KONTEXT_TEST_DATABASE_URL=postgres://nobody:s3cret@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if got := err != nil; got != tc.wantErr {
				t.Errorf("child failed: got %v (%v), want %v\n%s", got, err, tc.wantErr, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("child output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "REACHED") || strings.Contains(out.String(), "s3cret") {
				t.Errorf("child output:\n%s\nwant no REACHED and no password", out.String())
			}
		})
	}
}
