package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// SecureOptions turn on what a production agent has and a dev agent lacks.
type SecureOptions struct {
	// ACLToken, when set, turns ACLs on with default_policy "deny" and
	// makes it the initial management token (the agent's own token too).
	ACLToken string
	// TLS, when set, opens an HTTPS port with this server certificate,
	// requiring client certificates signed by TLS.CA (verify_incoming).
	TLS *PKI
}

// SecureConsul is a Consul agent with ACLs and/or an HTTPS port. Its
// Client (plain HTTP) carries the management token.
type SecureConsul struct {
	*Consul
	HTTPSAddr string // "127.0.0.1:PORT"; empty without TLS
}

// StartSecureConsul is StartConsul with ACLs and/or TLS on.
func StartSecureConsul(t testing.TB, opt SecureOptions) *SecureConsul {
	t.Helper()
	bin, err := ConsulBinaryPath()
	Need(t, err == nil, fmt.Sprintf("consul v%s: %v", ConsulVersion, err))
	c, err := NewConsul(bin, t.TempDir(), "consul-"+strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	sc := &SecureConsul{Consul: c}
	if opt.ACLToken != "" {
		c.args = append(c.args, "-hcl", fmt.Sprintf(`acl {
  enabled = true
  default_policy = "deny"
  tokens {
    initial_management = %q
    agent = %q
  }
}`, opt.ACLToken, opt.ACLToken))
		cfg := api.DefaultConfig()
		cfg.Address, cfg.Token = c.Addr, opt.ACLToken
		if c.Client, err = api.NewClient(cfg); err != nil {
			t.Fatal(err)
		}
	}
	if opt.TLS != nil {
		port := freePortBut(t, c.args)
		sc.HTTPSAddr = "127.0.0.1:" + strconv.Itoa(port)
		c.args = append(c.args, "-hcl", fmt.Sprintf("ports { https = %d }", port), "-hcl", fmt.Sprintf(`tls {
  https {
    ca_file = %q
    cert_file = %q
    key_file = %q
    verify_incoming = true
  }
}`, opt.TLS.CA, opt.TLS.ServerCert, opt.TLS.ServerKey))
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("consul log (tail):\n%s", tail([]byte(c.Log()), 4000))
		}
	})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return sc
}

// freePortBut returns a free port that is none of the ports in args, which
// were free a moment ago and may be handed out again.
func freePortBut(t testing.TB, args []string) int {
	t.Helper()
	for {
		p := FreePort(t)
		if !slices.Contains(args, strconv.Itoa(p)) {
			return p
		}
	}
}

// CreateACLToken creates a policy with rules and a token holding only it,
// and returns the token's secret and accessor IDs.
func (c *SecureConsul) CreateACLToken(t testing.TB, name, rules string) (secret, accessor string) {
	t.Helper()
	acl := c.Client.ACL()
	p, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	if err != nil {
		t.Fatalf("create ACL policy %s: %v", name, err)
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{Description: name, Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatalf("create ACL token for %s: %v", name, err)
	}
	return tok.SecretID, tok.AccessorID
}

// PKI is a throwaway certificate authority and the certificates it signed,
// as PEM files: a server certificate for 127.0.0.1, localhost and
// ServerName, and a client certificate.
type PKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// PKIServerName is the DNS name in the server certificate besides
// localhost, Consul's usual server name.
const PKIServerName = "server.dc1.consul"

// NewPKI writes a fresh CA and certificates into a temporary directory.
// Two calls give two unrelated CAs.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchyard test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{CA: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.CA, "CERTIFICATE", caDER)
	p.ServerCert, p.ServerKey = issue(t, dir, "server", ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: PKIServerName},
		DNSNames:    []string{PKIServerName, "localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.ClientCert, p.ClientKey = issue(t, dir, "client", ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "registrar"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

// issue signs tmpl with the CA and writes name.pem and name-key.pem.
func issue(t testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (certPath, keyPath string) {
	t.Helper()
	key := newKey(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = ca.NotBefore, ca.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certPath, "CERTIFICATE", der)
	writePEM(t, keyPath, "PRIVATE KEY", keyDER)
	return certPath, keyPath
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
