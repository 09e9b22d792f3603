package webhook

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// The SSRF guard. A merchant chooses the URL we POST to, so without a guard
// a merchant could make settle's network position do requests for them:
// the cloud metadata service (169.254.169.254), databases on the private
// network, admin ports on loopback. Registration refuses such URLs, but DNS
// can change after registration (or answer differently per query: DNS
// rebinding), so the dialer checks the address it actually connects to.

// ErrBlockedAddress is matched (errors.Is) by a dial the guard refused.
var ErrBlockedAddress = errors.New("address not allowed for webhooks")

// Policy says which destinations are allowed.
type Policy struct {
	// AllowLoopback admits http:// URLs and loopback addresses (127/8,
	// ::1, localhost). Only for settle dev and tests
	// (webhooks.allow_loopback): a production dispatcher must never POST to
	// its own host.
	AllowLoopback bool
}

// blocked are the ranges a webhook may never reach besides loopback (which
// the policy decides): private, shared (CGNAT), link-local (including the
// metadata address), documentation and benchmarking nets, multicast and
// the reserved rest.
var blocked = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// AllowedAddr reports whether the policy lets a webhook connect to ip.
// IPv4-mapped IPv6 (::ffff:10.0.0.1) is judged as the IPv4 address it is.
func (p Policy) AllowedAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return false
	}
	if ip.IsLoopback() {
		return p.AllowLoopback
	}
	if ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ip.IsPrivate() || !ip.IsGlobalUnicast() {
		return false
	}
	for _, b := range blocked {
		if b.Contains(ip) {
			return false
		}
	}
	return true
}

// maxURLLength bounds a stored URL.
const maxURLLength = 2048

// CheckURL checks an endpoint URL at registration: https (http only under
// AllowLoopback), a host that is a name or a public address, no user info,
// no fragment. Names are not resolved here (the answer could change by the
// time we connect); the dialer checks every connection.
func (p Policy) CheckURL(raw string) (*url.URL, error) {
	if len(raw) > maxURLLength {
		return nil, fmt.Errorf("url is longer than %d characters", maxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Opaque != "" {
		return nil, errors.New("url must be an absolute https URL")
	}
	if u.User != nil {
		return nil, errors.New("url must not contain user info")
	}
	if u.Fragment != "" {
		return nil, errors.New("url must not contain a fragment")
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return nil, errors.New("url has no host")
	}
	loopback := host == "localhost" || strings.HasSuffix(host, ".localhost")
	if ip, err := netip.ParseAddr(host); err == nil {
		loopback = ip.Unmap().IsLoopback()
		if !p.AllowedAddr(ip) {
			return nil, errors.New("url host must be a public address")
		}
	} else if loopback {
		if !p.AllowLoopback {
			return nil, errors.New("url host must be public, not localhost")
		}
	} else if !strings.Contains(host, ".") || strings.HasSuffix(host, ".local") || strings.HasSuffix(host, ".internal") || strings.HasSuffix(host, ".localdomain") {
		return nil, errors.New("url host must be a public DNS name")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.AllowLoopback && loopback:
	default:
		return nil, errors.New("url must use https")
	}
	return u, nil
}

// control runs after the name is resolved and before connect(2): the one
// place every connection passes, whatever the resolver answered.
func (p Policy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", address, ErrBlockedAddress)
	}
	if !p.AllowedAddr(ap.Addr()) {
		return fmt.Errorf("dialing %s: %w", address, ErrBlockedAddress)
	}
	return nil
}

// Client returns the HTTP client deliveries go through: the guard on every
// dial, no proxy from the environment (a proxy would dial for us, past the
// guard), no redirects (a 3xx is the answer, and counts as a failure), and
// timeout per request. rootCAs replaces the system pool when set (tests).
func (p Policy) Client(timeout time.Duration, rootCAs *x509.CertPool) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: p.control}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: rootCAs},
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
