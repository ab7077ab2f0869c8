package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// testdataFiles lists dir's .toml and .json files.
func testdataFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, ext := range []string{"*.toml", "*.json"} {
		m, err := filepath.Glob(filepath.Join(dir, ext))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			if !strings.Contains(filepath.Base(f), ".golden.") {
				files = append(files, f)
			}
		}
	}
	if len(files) == 0 {
		t.Fatalf("no configs in %s", dir)
	}
	return files
}

func formatOf(file string) string { return strings.TrimPrefix(filepath.Ext(file), ".") }

func stemOf(file string) string { return strings.TrimSuffix(file, filepath.Ext(file)) }

// checkGolden compares got with the golden file, or writes it with -update.
// Several inputs may share one golden file (pair.toml and pair.json): the first
// of them writes it under -update and the others are compared with it.
func checkGolden(t *testing.T, golden string, got []byte, written map[string]bool) {
	t.Helper()
	if *update && !written[golden] {
		written[golden] = true
		if len(got) == 0 {
			if err := os.Remove(golden); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if errors.Is(err, os.ErrNotExist) && len(got) == 0 {
		return
	}
	if err != nil {
		t.Fatalf("%v (run go test ./config -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test ./config -update rewrites it)\n--- got\n%s\n--- want\n%s", golden, got, want)
	}
}

func problemLines(ps []Problem) []byte {
	var b bytes.Buffer
	for _, p := range ps {
		b.WriteString(p.Error())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestGolden loads every config of testdata/golden and compares the normalised
// config (Load, then JSON) with <name>.golden.json and the warnings with
// <name>.warnings.txt.
func TestGolden(t *testing.T) {
	written := map[string]bool{}
	for _, file := range testdataFiles(t, "testdata/golden") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			c, warnings, err := Load(data, LoadOptions{Format: formatOf(file)})
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			got, err := Encode(c, "json")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, stemOf(file)+".golden.json", got, written)
			checkGolden(t, stemOf(file)+".warnings.txt", problemLines(warnings), written)

			// The normalised config is a fixed point: dumping it in either
			// format and loading it again changes nothing.
			for _, format := range []string{"toml", "json"} {
				dump, err := Encode(c, format)
				if err != nil {
					t.Fatalf("encode %s: %v", format, err)
				}
				again, warnings, err := Load(dump, LoadOptions{Format: format, Strict: true})
				if err != nil || len(warnings) > 0 {
					t.Fatalf("reload of the %s dump: %v %v\n%s", format, err, warnings, dump)
				}
				got2, _ := Encode(again, "json")
				if !bytes.Equal(got, got2) {
					t.Errorf("%s dump does not load back to the same config\n--- dump\n%s\n--- got\n%s", format, dump, got2)
				}
			}
		})
	}
}

// TestInvalidGolden loads every config of testdata/invalid in strict mode and
// compares the problems, one per line, with <name>.errors.txt.
func TestInvalidGolden(t *testing.T) {
	written := map[string]bool{}
	for _, file := range testdataFiles(t, "testdata/invalid") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			c, _, err := Load(data, LoadOptions{Format: formatOf(file), Strict: true})
			if err == nil {
				t.Fatalf("loaded without error: %+v", c)
			}
			if c != nil {
				t.Error("a config came back with an error")
			}
			checkGolden(t, stemOf(file)+".errors.txt", problemLines(Problems(err)), written)
		})
	}
}
