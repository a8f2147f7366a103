package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// The images users deploy (examples/docker) and the compose demo. Nothing
// can be pulled here, so the build stage (FROM golang) of a Dockerfile
// cannot run: the tests build each Dockerfile's "runtime" stage for real
// (on a base image made here when the public one is not local), then add
// statically linked binaries compiled here exactly as its "release" stage
// adds the ones the build stage compiles. The layout test checks that the
// release stage is nothing but those COPYs, so this is the image an
// operator builds, but for where the binary was compiled.

// pkgDockerfiles are the images the project documents, by file.
var pkgDockerfiles = map[string]string{
	"registrar.Dockerfile":        "switchyard/registrar",
	"renderer-nginx.Dockerfile":   "switchyard/renderer-nginx",
	"renderer-haproxy.Dockerfile": "switchyard/renderer-haproxy",
	"webapp.Dockerfile":           "switchyard/demo-webapp",
}

func pkgRoot(t *testing.T) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestDockerfilesLayout checks what the image tests and users rely on in
// every Dockerfile: the GO_IMAGE and BASE_IMAGE build arguments; a first
// stage "runtime" on BASE_IMAGE (the classic builder, docker-compose v1's,
// builds every stage up to the target, so --target runtime must not need
// the Go image); a "build" stage on GO_IMAGE; a last stage "release" that
// is runtime plus COPY --from=build and nothing else; an ENTRYPOINT; and a
// header naming the image.
func TestDockerfilesLayout(t *testing.T) {
	root := pkgRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, "examples", "docker", "*.Dockerfile"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	want := slices.Sorted(maps.Keys(pkgDockerfiles))
	if !slices.Equal(names, want) {
		t.Errorf("examples/docker holds %v; want exactly %v (add a new image to pkgDockerfiles and the README)", names, want)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			d, err := pkgParseDockerfile(filepath.Join(root, "examples", "docker", name))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pkgLayoutProblems(d, pkgDockerfiles[name]) {
				t.Errorf("%s: %s", name, p)
			}
			for _, p := range pkgBuildStageProblems(t, root, d) {
				t.Errorf("%s: %s", name, p)
			}
		})
	}
}

func pkgLayoutProblems(d *pkgDockerfile, image string) []string {
	var out []string
	for _, a := range []string{"GO_IMAGE", "BASE_IMAGE"} {
		if d.Args[a] == "" {
			out = append(out, fmt.Sprintf("no global ARG %s=<public default image>", a))
		}
	}
	if !bytes.Contains(d.Raw, []byte(image)) {
		out = append(out, fmt.Sprintf("the header does not name the image %s", image))
	}
	ri, runtime := d.stage("runtime")
	bi, build := d.stage("build")
	switch {
	case runtime == nil || ri != 0:
		out = append(out, `the first stage must be "runtime"`)
	case runtime.From != "${BASE_IMAGE}":
		out = append(out, fmt.Sprintf("stage runtime is FROM %s; want ${BASE_IMAGE}", runtime.From))
	case !slices.ContainsFunc(runtime.Instrs, func(s string) bool { return strings.HasPrefix(s, "ENTRYPOINT") }):
		out = append(out, "stage runtime has no ENTRYPOINT")
	}
	if build == nil || build.From != "${GO_IMAGE}" || bi < ri {
		out = append(out, `no stage "build" FROM ${GO_IMAGE} after runtime`)
	}
	last := d.Stages[len(d.Stages)-1]
	if last.Name != "release" || last.From != "runtime" {
		out = append(out, fmt.Sprintf(`the last stage (the default target) is %q FROM %s; want "release" FROM runtime`, last.Name, last.From))
	}
	for _, in := range last.Instrs {
		if c, ok := pkgParseCopy(in); !ok || c.From != "build" {
			out = append(out, fmt.Sprintf("stage release has %q; it may only COPY --from=build (the tests rebuild it from binaries compiled here)", in))
		}
	}
	return out
}

// pkgBuildStageProblems checks what the tests cannot run here: that the
// build stage copies go.mod, go.sum and the directory of every package of
// this module each `go build ./PKG` compiles (go list -deps), so a new
// import of another part of the repository cannot break the image build.
func pkgBuildStageProblems(t *testing.T, root string, d *pkgDockerfile) []string {
	t.Helper()
	_, build := d.stage("build")
	if build == nil {
		return nil // reported by the layout check
	}
	var copied, pkgs []string
	for _, in := range build.Instrs {
		if cp, ok := pkgParseCopy(in); ok && cp.From == "" {
			copied = append(copied, cp.Srcs...)
		}
		if strings.HasPrefix(in, "RUN ") && strings.Contains(in, "go build") {
			for _, f := range strings.Fields(in) {
				if strings.HasPrefix(f, "./") {
					pkgs = append(pkgs, f)
				}
			}
		}
	}
	covers := func(rel string) bool {
		for _, c := range copied {
			c = strings.TrimSuffix(strings.TrimPrefix(c, "./"), "/")
			if c == "." || c == rel || strings.HasPrefix(rel, c+"/") {
				return true
			}
		}
		return false
	}
	var out []string
	for _, f := range []string{"go.mod", "go.sum"} {
		if !covers(f) {
			out = append(out, "the build stage does not COPY "+f)
		}
	}
	if len(pkgs) == 0 {
		out = append(out, "the build stage has no RUN go build ./PKG")
	}
	for _, pkg := range pkgs {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", pkg)
		cmd.Dir = root
		b, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dir := range strings.Fields(string(b)) {
			rel, _ := filepath.Rel(root, dir)
			if !covers(filepath.ToSlash(rel)) {
				out = append(out, fmt.Sprintf("go build %s needs %s, which the build stage does not COPY", pkg, rel))
			}
		}
	}
	return out
}

// TestComposeDemoFile proves docker-compose.demo.yml parses (docker-compose
// config, as users run it) and that each image it builds has its
// Dockerfile, build target, documented name, and that the demo app is
// scaled to 3 with routing labels. It cannot be brought up here: the
// Consul image cannot be pulled (scripts/demo.sh is the demo without a
// registry; TestDemoScript runs it).
func TestComposeDemoFile(t *testing.T) {
	root := pkgRoot(t)
	compose, err := exec.LookPath("docker-compose")
	testenv.Need(t, err == nil, fmt.Sprintf("docker-compose: %v", err))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, compose, "-f", "docker-compose.demo.yml", "config")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker-compose -f docker-compose.demo.yml config: %v\n%s", err, stderr.String())
	}
	services := pkgComposeServices(string(out))
	t.Logf("services: %v", slices.Sorted(maps.Keys(services)))

	built := map[string]bool{}
	for name, s := range services {
		if s["dockerfile"] == "" {
			continue
		}
		df := filepath.Join(s["context"], s["dockerfile"])
		built[filepath.Base(df)] = true
		d, err := pkgParseDockerfile(df)
		if err != nil {
			t.Errorf("service %s builds %s: %v", name, df, err)
			continue
		}
		if tg := s["target"]; tg != "" {
			if _, st := d.stage(tg); st == nil {
				t.Errorf("service %s builds target %q, which %s lacks", name, tg, df)
			}
		}
		if want := pkgDockerfiles[filepath.Base(df)]; !strings.HasPrefix(s["image"], want+":") && s["image"] != want {
			t.Errorf("service %s tags its image %q; want %s (the documented name)", name, s["image"], want)
		}
	}
	for name := range pkgDockerfiles {
		if !built[name] {
			t.Errorf("the compose demo builds no image from examples/docker/%s", name)
		}
	}
	for _, want := range []string{"consul", "registrar", "renderer-nginx", "renderer-haproxy", "web"} {
		if services[want] == nil {
			t.Errorf("the compose demo has no service %q", want)
		}
	}
	web := services["web"]
	if web["scale"] != "3" {
		t.Errorf("service web has scale %q; want 3", web["scale"])
	}
	if web["SERVICE_NAME"] != "web" || web["SERVICE_CHECK_HTTP"] == "" {
		t.Errorf("service web lacks its routing labels SERVICE_NAME=web and SERVICE_CHECK_HTTP: %v", web)
	}
}

// pkgComposeServices reads the few keys the test needs from the
// normalised YAML docker-compose config prints (two-space indents,
// services at level 1): per service, the scalar keys at any depth by their
// last name (context, dockerfile, target, image, scale, labels...).
func pkgComposeServices(yml string) map[string]map[string]string {
	out := map[string]map[string]string{}
	var cur map[string]string
	inServices := false
	for _, line := range strings.Split(yml, "\n") {
		indent := len(line) - len(strings.TrimLeft(line, " "))
		text := strings.TrimSpace(line)
		switch {
		case text == "":
			continue
		case indent == 0:
			inServices, cur = text == "services:", nil
			continue
		case !inServices:
			continue
		case indent == 2:
			cur = map[string]string{}
			out[strings.TrimSuffix(text, ":")] = cur
			continue
		}
		if k, v, ok := strings.Cut(strings.TrimPrefix(text, "- "), ":"); ok && cur != nil && strings.TrimSpace(v) != "" {
			cur[k] = strings.Trim(strings.TrimSpace(v), `'"`)
		}
	}
	return out
}

// TestPackagedImages builds the registrar and renderer-haproxy images and
// runs them as the docs say: the registrar with gliderlabs/registrator's
// documented run line, only the image name (and this test's Consul port)
// changed, registers two containers; the renderer-haproxy image, PID 1
// supervising `haproxy -W -S`, configured only through its environment and
// its baked-in template, routes requests to both; docker stop ends both
// with exit code 0.
func TestPackagedImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images")
	}
	c := testenv.Docker(t)
	dockerCLI, err := exec.LookPath("docker")
	testenv.Need(t, err == nil, fmt.Sprintf("docker CLI: %v", err))
	_, err = os.Stat("/var/run/docker.sock")
	testenv.Need(t, err == nil && os.Getenv("DOCKER_HOST") == "", "the Docker Engine at /var/run/docker.sock (registrator's run line mounts it)")
	haproxy := testenv.HAProxyBinary(t)
	consul := testenv.StartConsul(t)

	start := time.Now()
	base := pkgHAProxyBase(t, c, haproxy)
	registrarImg := pkgImage(t, c, "registrar", nil)
	rendererImg := pkgImage(t, c, "renderer-haproxy", map[string]string{"BASE_IMAGE": base})
	t.Logf("images built in %s", time.Since(start).Round(time.Millisecond))

	_, consulPort, _ := net.SplitHostPort(consul.Addr)
	regName := testenv.RandomName("sy-test-registrator")
	// registrator's README: docker run -d --name=registrator --net=host
	//   --volume=/var/run/docker.sock:/tmp/docker.sock gliderlabs/registrator:latest consul://localhost:8500
	// plus our label, so a crashed run's leftovers can be found.
	regID := pkgDockerRun(t, c, dockerCLI, "-d", "--name="+regName, "--net=host",
		"--volume=/var/run/docker.sock:/tmp/docker.sock", "--label", testenv.TestLabel+"=1",
		registrarImg, "consul://localhost:"+consulPort)

	svc := testenv.RandomName("pkgweb")
	network := testenv.CreateNetwork(t).Name
	want := map[string]bool{}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("%s-%d", svc, i)
		ctr := testenv.RunContainer(t, testenv.RunOptions{
			Labels: map[string]string{"SERVICE_NAME": svc}, Env: map[string]string{"NAME": name}, Ports: []string{"8080"}, Network: network,
		})
		want["127.0.0.1:"+testenv.HostPort(ctr, "8080")] = true
	}
	testenv.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		entries, err := consul.Services(ctx, svc, false)
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, e := range entries {
			got[net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port))] = true
		}
		if len(got) != len(want) || !pkgSubset(want, got) {
			return fmt.Errorf("catalog has %v for %s; want %v", got, svc, want)
		}
		return nil
	})

	ports, err := testenv.PickPorts(2)
	if err != nil {
		t.Fatal(err)
	}
	listen, status := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	renID := pkgDockerRun(t, c, dockerCLI, "-d", "--name="+testenv.RandomName("sy-test-renderer-haproxy"), "--net=host",
		"--label", testenv.TestLabel+"=1", "-e", "CONSUL_HTTP_ADDR="+consul.Addr, "-e", "SWITCHYARD_LISTEN="+listen,
		"-e", "RENDERER_STATUS_ADDR="+status, rendererImg)

	seen := map[string]bool{}
	testenv.Eventually(t, 60*time.Second, func() error {
		body, err := pkgGet("http://"+listen+"/", svc+".localhost")
		if err != nil {
			return err
		}
		seen[strings.TrimSpace(body)] = true
		if len(seen) < 2 {
			return fmt.Errorf("answers so far through HAProxy: %v; want both instances", seen)
		}
		return nil
	})
	// Ready once the renderer has verified HAProxy's start, which may come
	// a moment after HAProxy answers.
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := pkgGet("http://"+status+"/ready", "")
		return err
	})
	pkgCheckSupervision(t, c, renID)

	for _, id := range []string{renID, regID} {
		if err := c.StopContainer(id, 25); err != nil {
			t.Fatalf("docker stop %s: %v", id, err)
		}
		ctr, err := c.InspectContainerWithOptions(docker.InspectContainerOptions{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		if ctr.State.ExitCode != 0 {
			t.Errorf("docker stop %s: exit code %d; want 0 (SIGTERM handled by PID 1, not a SIGKILL)", ctr.Name, ctr.State.ExitCode)
		}
	}
}

// pkgCheckSupervision checks, from the host's process table, that the
// container's PID 1 is the renderer and that its child is HAProxy in
// master-worker mode with the master CLI next to the live config.
func pkgCheckSupervision(t *testing.T, c *docker.Client, id string) {
	t.Helper()
	ctr, err := c.InspectContainerWithOptions(docker.InspectContainerOptions{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	pid1 := ctr.State.Pid
	if got := pkgCmdline(pid1); len(got) == 0 || got[0] != "/usr/local/bin/renderer" {
		t.Errorf("the container's PID 1 runs %q; want /usr/local/bin/renderer", got)
	}
	var master []string
	for _, p := range testenv.Procs() {
		if p.PPID == pid1 && p.Comm == "haproxy" {
			master = pkgCmdline(p.PID)
		}
	}
	dir := "/var/lib/switchyard/haproxy/"
	want := []string{"-W", "-S", dir + "haproxy-master.sock,mode,600", "-f", dir + "haproxy.cfg"}
	if !pkgContainsSeq(master, want) {
		t.Errorf("the renderer's haproxy child runs %q; want the arguments %q", master, want)
	}
}

func pkgCmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

func pkgContainsSeq(s, seq []string) bool {
	for i := 0; i+len(seq) <= len(s); i++ {
		if slices.Equal(s[i:i+len(seq)], seq) {
			return true
		}
	}
	return false
}

func pkgSubset(a, b map[string]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// pkgGet sends one GET with a short deadline; a non-200 is an error.
func pkgGet(url, host string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if host != "" {
		req.Host = host
	}
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s (Host %s): %s: %s", url, host, resp.Status, b)
	}
	return string(b), nil
}

// pkgDockerRun runs `docker run ARGS` with the CLI (the line users type)
// and returns the container ID; the container is removed at cleanup, its
// log printed first if the test failed.
func pkgDockerRun(t *testing.T, c *docker.Client, cli string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, append([]string{"run"}, args...)...).CombinedOutput()
	id := strings.TrimSpace(string(out))
	if err != nil {
		t.Fatalf("docker run %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			var logs bytes.Buffer
			_ = c.Logs(docker.LogsOptions{Container: id, OutputStream: &logs, ErrorStream: &logs, Stdout: true, Stderr: true, Tail: "60"})
			t.Logf("docker logs %.12s (tail):\n%s", id, logs.String())
		}
		testenv.RemoveContainer(c, id)
	})
	return id
}

// pkgImage builds examples/docker/NAME.Dockerfile as release would: the
// "runtime" stage with args, then that image plus the binaries compiled
// here where release copies them from the build stage. Both images are
// removed at cleanup.
func pkgImage(t *testing.T, c *docker.Client, name string, args map[string]string) string {
	t.Helper()
	root := pkgRoot(t)
	d, err := pkgParseDockerfile(filepath.Join(root, "examples", "docker", name+".Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	_, runtime := d.stage("runtime")
	_, release := d.stage("release")
	if runtime == nil || release == nil {
		t.Fatalf("%s: no runtime or release stage (see TestDockerfilesLayout)", d.Path)
	}

	// The runtime stage, with the repository files its COPYs name.
	ctxTar := newPkgTar()
	if err := ctxTar.file("Dockerfile", 0o644, d.Raw); err != nil {
		t.Fatal(err)
	}
	for _, in := range runtime.Instrs {
		if cp, ok := pkgParseCopy(in); ok && cp.From == "" {
			for _, src := range cp.Srcs {
				if err := ctxTar.fromDisk(src, filepath.Join(root, src)); err != nil {
					t.Fatalf("%s: %s: %v", d.Path, in, err)
				}
			}
		}
	}
	runtimeTag := "switchyard-test/" + name + "-runtime:" + strings.TrimPrefix(testenv.RandomName("t"), "t-")
	pkgBuildImage(t, c, runtimeTag, ctxTar, "runtime", args)

	// release, with the binaries in the context instead of the build stage.
	var df strings.Builder
	fmt.Fprintf(&df, "FROM %s\n", runtimeTag)
	relTar := newPkgTar()
	for _, in := range release.Instrs {
		cp, _ := pkgParseCopy(in) // TestDockerfilesLayout: all are COPY --from=build
		for _, src := range cp.Srcs {
			bin := pkgStaticBinary(t, path.Base(src))
			b, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			if err := relTar.file("bin/"+path.Base(src), 0o755, b); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&df, "COPY bin/%s %s\n", path.Base(src), cp.Dest)
		}
	}
	if err := relTar.file("Dockerfile", 0o644, []byte(df.String())); err != nil {
		t.Fatal(err)
	}
	tag := "switchyard-test/" + name + ":" + strings.TrimPrefix(testenv.RandomName("t"), "t-")
	pkgBuildImage(t, c, tag, relTar, "", nil)
	return tag
}

// pkgBuildImage builds the context; the image is removed at cleanup.
func pkgBuildImage(t *testing.T, c *docker.Client, tag string, ctxTar *pkgTar, target string, args map[string]string) {
	t.Helper()
	body, err := ctxTar.bytes()
	if err != nil {
		t.Fatal(err)
	}
	var buildArgs []docker.BuildArg
	for k, v := range args {
		buildArgs = append(buildArgs, docker.BuildArg{Name: k, Value: v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err = c.BuildImage(docker.BuildImageOptions{
		Context: ctx, Name: tag, InputStream: bytes.NewReader(body), OutputStream: &out,
		Target: target, BuildArgs: buildArgs, Labels: map[string]string{testenv.TestLabel: "1"},
		RmTmpContainer: true, ForceRmTmpContainer: true,
	})
	if err != nil {
		t.Fatalf("docker build %s (target %q, args %v): %v\n%s", tag, target, args, err, out.String())
	}
	t.Cleanup(func() { _ = c.RemoveImageExtended(tag, docker.RemoveImageOptions{Force: true}) })
}

var pkgBinaries struct {
	sync.Mutex
	dir   string
	built map[string]string
}

// pkgStaticBinary compiles the main package that makes the binary name
// (registrar, renderer, webapp) as the Dockerfiles do: static, no race
// detector (which needs cgo), for an image without a libc.
func pkgStaticBinary(t *testing.T, name string) string {
	t.Helper()
	pkgs := map[string]string{"registrar": "./registrar", "renderer": "./renderer", "webapp": "./scripts/fixtures/webapp"}
	pkg, ok := pkgs[name]
	if !ok {
		t.Fatalf("no main package known for the binary %q", name)
	}
	pkgBinaries.Lock()
	defer pkgBinaries.Unlock()
	if p := pkgBinaries.built[name]; p != "" {
		return p
	}
	if pkgBinaries.built == nil {
		// One fixed folder, as testenv.Build does: nothing piles up in /tmp.
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("switchyard-static-%d", os.Getuid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		pkgBinaries.dir, pkgBinaries.built = dir, map[string]string{}
	}
	out := filepath.Join(pkgBinaries.dir, name)
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, pkg)
	cmd.Dir = pkgRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	pkgBinaries.built[name] = out
	return out
}

// pkgHAProxyBase makes an image that stands in for the official
// haproxy:2.6 one where it cannot be pulled: this host's haproxy (Debian
// 12's 2.6, the release the renderer is tested with) and the shared
// libraries it loads, in /usr/local/sbin as there, with the settings of
// that image the renderer image must override (USER haproxy, STOPSIGNAL
// SIGUSR1, an haproxy ENTRYPOINT and CMD). Tagged by content, so it is
// built once per haproxy build.
func pkgHAProxyBase(t *testing.T, c *docker.Client, haproxy string) string {
	t.Helper()
	files, err := pkgSharedLibs(haproxy)
	if err != nil {
		t.Fatal(err)
	}
	files["usr/local/sbin/haproxy"] = haproxy
	ctxTar := newPkgTar()
	sum := sha256.New()
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		b, err := os.ReadFile(files[dst])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(sum, "%s %d\n", dst, len(b))
		sum.Write(b)
		if err := ctxTar.file("rootfs/"+dst, 0o755, b); err != nil {
			t.Fatal(err)
		}
	}
	err = errors.Join(
		ctxTar.file("rootfs/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nhaproxy:x:99:99::/var/lib/haproxy:/usr/sbin/nologin\n")),
		ctxTar.file("rootfs/etc/group", 0o644, []byte("root:x:0:\nhaproxy:x:99:\n")),
		ctxTar.dir("rootfs/tmp", 0o1777, 0),
		ctxTar.dir("rootfs/var/lib/haproxy", 0o755, 99),
		ctxTar.file("Dockerfile", 0o644, []byte(`FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER haproxy
WORKDIR /var/lib/haproxy
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/usr/local/sbin/haproxy"]
CMD ["-f", "/usr/local/etc/haproxy/haproxy.cfg"]
`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	tag := "switchyard-test/haproxy-base:" + hex.EncodeToString(sum.Sum(nil))[:12]
	if _, err := c.InspectImage(tag); err == nil {
		return tag
	}
	body, err := ctxTar.bytes()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err = c.BuildImage(docker.BuildImageOptions{Context: ctx, Name: tag, InputStream: bytes.NewReader(body), OutputStream: &out,
		Labels: map[string]string{testenv.TestLabel: "1"}, RmTmpContainer: true})
	if err != nil {
		t.Fatalf("docker build %s: %v\n%s", tag, err, out.String())
	}
	return tag
}

// pkgSharedLibs maps each shared library bin loads (ldd), the dynamic
// loader included, from its path in the image to the file on this host.
func pkgSharedLibs(bin string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	libs := map[string]string{}
	re := regexp.MustCompile(`(?m)^\s*(?:\S+ => )?(/\S+) \(0x`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		libs[strings.TrimPrefix(m[1], "/")] = m[1]
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s: no libraries in %q", bin, out)
	}
	return libs, nil
}
