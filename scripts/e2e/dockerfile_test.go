package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// This file reads the Dockerfiles in examples/docker far enough to build
// their stages here and to check their layout; packaging_test.go uses it.

// pkgStage is one FROM ... AS name stage of a Dockerfile.
type pkgStage struct {
	Name, From string
	Instrs     []string // instructions after FROM, continuation lines joined
}

// pkgDockerfile is a parsed Dockerfile.
type pkgDockerfile struct {
	Path   string
	Raw    []byte
	Args   map[string]string // ARGs before the first FROM, with their defaults
	Stages []pkgStage
}

func pkgParseDockerfile(path string) (*pkgDockerfile, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d := &pkgDockerfile{Path: path, Raw: raw, Args: map[string]string{}}
	var instrs []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue // comments may sit inside a continuation too
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		instrs = append(instrs, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, in := range instrs {
		f := strings.Fields(in)
		switch kw := strings.ToUpper(f[0]); {
		case kw == "FROM":
			s := pkgStage{From: f[1]}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				s.Name = f[3]
			}
			d.Stages = append(d.Stages, s)
		case len(d.Stages) == 0 && kw == "ARG":
			name, def, _ := strings.Cut(f[1], "=")
			d.Args[name] = def
		case len(d.Stages) == 0:
			return nil, fmt.Errorf("%s: %q before the first FROM", path, in)
		default:
			last := &d.Stages[len(d.Stages)-1]
			last.Instrs = append(last.Instrs, in)
		}
	}
	return d, nil
}

func (d *pkgDockerfile) stage(name string) (int, *pkgStage) {
	for i := range d.Stages {
		if d.Stages[i].Name == name {
			return i, &d.Stages[i]
		}
	}
	return -1, nil
}

// pkgCopy is a COPY instruction: its --from (if any), sources and
// destination.
type pkgCopy struct {
	From string
	Srcs []string
	Dest string
}

// pkgParseCopy reads a shell-form COPY; ok is false for anything else.
func pkgParseCopy(in string) (c pkgCopy, ok bool) {
	f := strings.Fields(in)
	if len(f) < 3 || !strings.EqualFold(f[0], "COPY") || strings.HasPrefix(f[1], "[") {
		return c, false
	}
	args := f[1:]
	for len(args) > 0 && strings.HasPrefix(args[0], "--") {
		if v, found := strings.CutPrefix(args[0], "--from="); found {
			c.From = v
		}
		args = args[1:]
	}
	if len(args) < 2 {
		return c, false
	}
	c.Srcs, c.Dest = args[:len(args)-1], args[len(args)-1]
	return c, true
}

// pkgTar is a build context assembled in memory.
type pkgTar struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	dirs map[string]bool
}

func newPkgTar() *pkgTar {
	p := &pkgTar{dirs: map[string]bool{}}
	p.tw = tar.NewWriter(&p.buf)
	return p
}

func (p *pkgTar) dir(name string, mode int64, uid int) error {
	name = strings.Trim(filepath.ToSlash(name), "/")
	if name == "" || name == "." || p.dirs[name] {
		return nil
	}
	if err := p.dir(filepath.Dir(name), 0o755, 0); err != nil {
		return err
	}
	p.dirs[name] = true
	return p.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid})
}

func (p *pkgTar) file(name string, mode int64, body []byte) error {
	name = strings.TrimPrefix(filepath.ToSlash(name), "/")
	if err := p.dir(filepath.Dir(name), 0o755, 0); err != nil {
		return err
	}
	if err := p.tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body))}); err != nil {
		return err
	}
	_, err := p.tw.Write(body)
	return err
}

// fromDisk adds the file or tree at src (following symlinks to their
// content) under name.
func (p *pkgTar) fromDisk(name, src string) error {
	return filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(name, rel)
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return p.dir(dst, 0o755, 0)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return p.file(dst, int64(fi.Mode().Perm()), b)
	})
}

func (p *pkgTar) bytes() ([]byte, error) {
	if err := p.tw.Close(); err != nil {
		return nil, err
	}
	return p.buf.Bytes(), nil
}
