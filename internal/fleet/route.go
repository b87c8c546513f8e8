package fleet

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Headers of a request one host forwards to another. The cluster's secret
// (in etcd, which every host trusts already) authenticates the forwarding
// host; the caller header carries the token the first host checked.
const (
	HeaderForwardedBy = "Wisp-Forwarded-By"
	HeaderHops        = "Wisp-Hops"
	HeaderCaller      = "Wisp-Caller"
	// HeaderLocal asks a host for its own sprites only (a list).
	HeaderLocal = "Wisp-Local"
	maxHops     = 2
)

// forwarder sends requests to other hosts' APIs.
type forwarder struct {
	secret string
	id     string
}

// Route decides where a request for sprite name is served: nil when here
// (this host has it, or takes it now: a published sprite at rest that this
// host is the place for is claimed and fetched first), or a handler that
// forwards the request to the host that has it. caller is the credential
// the request came with, as the server passes it on (nil: full access,
// from the daemon's own socket).
func (f *Fleet) Route(r *http.Request, name string, caller []byte) (http.Handler, error) {
	if _, err := f.m.Get(name); err == nil {
		return nil, nil
	}
	ctx := r.Context()
	for range 3 {
		s, err := f.node.Get(ctx, name)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, nil // nowhere: the local handler says so
		}
		if err != nil {
			return nil, err
		}
		to := ""
		switch {
		case s.Owner == f.ID():
		case s.Owner != "":
			to = s.Owner
		case s.Head != nil && r.Header.Get(HeaderForwardedBy) == "":
			to = f.placeAtRest(ctx, *s.Head)
		}
		if to != "" && to != f.ID() {
			return f.forwardTo(ctx, to, r, caller)
		}
		err = f.bring(ctx, name)
		if errors.Is(err, errdefs.ErrConflict) {
			continue // another host claimed it first: send it there
		}
		return nil, err
	}
	return nil, fmt.Errorf("sprite %q keeps moving between hosts: %w", name, errdefs.ErrUnavailable)
}

// placeAtRest picks the host that wakes a published sprite: its last host
// when that one is live, not draining and able to run its memory; else
// this host.
func (f *Fleet) placeAtRest(ctx context.Context, head cluster.Head) string {
	hosts, err := f.node.Hosts(ctx)
	if err != nil {
		return f.ID()
	}
	for _, h := range hosts {
		if h.ID == head.Host && !h.Draining && h.API != "" {
			return h.ID
		}
	}
	if f.draining(hosts) {
		for _, h := range hosts {
			if h.ID != f.ID() && !h.Draining && h.API != "" {
				return h.ID
			}
		}
	}
	return f.ID()
}

func (f *Fleet) draining(hosts []cluster.Host) bool {
	for _, h := range hosts {
		if h.ID == f.ID() {
			return h.Draining
		}
	}
	return false
}

// forwardTo returns a handler that sends r to host id's API.
func (f *Fleet) forwardTo(ctx context.Context, id string, r *http.Request, caller []byte) (http.Handler, error) {
	hops, _ := strconv.Atoi(r.Header.Get(HeaderHops))
	if hops >= maxHops {
		return nil, fmt.Errorf("request forwarded %d times without reaching the sprite's host: %w", hops, errdefs.ErrUnavailable)
	}
	base, err := f.hostURL(ctx, id)
	if err != nil {
		return nil, err
	}
	fw, err := f.forwarder(ctx)
	if err != nil {
		return nil, err
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(base)
			pr.Out.Host = base.Host
			pr.Out.Header.Set("Authorization", "Bearer "+fw.secret)
			pr.Out.Header.Set(HeaderForwardedBy, fw.id)
			pr.Out.Header.Set(HeaderHops, strconv.Itoa(hops+1))
			pr.Out.Header.Del(HeaderCaller)
			if caller != nil {
				pr.Out.Header.Set(HeaderCaller, string(caller))
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, `{"error":{"code":"unavailable","message":%q}}`, "host "+id+" did not answer: "+err.Error())
		},
	}, nil
}

// hostURL is the base URL of host id's API.
func (f *Fleet) hostURL(ctx context.Context, id string) (*url.URL, error) {
	hosts, err := f.node.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		if h.ID == id {
			if h.API == "" {
				return nil, fmt.Errorf("host %s serves no API over TCP: %w", id, errdefs.ErrUnavailable)
			}
			return url.Parse(h.API)
		}
	}
	return nil, fmt.Errorf("host %s is not in the cluster (its lease ended): %w", id, errdefs.ErrUnavailable)
}

func (f *Fleet) forwarder(ctx context.Context) (*forwarder, error) {
	f.mu.Lock()
	fw := f.client
	f.mu.Unlock()
	if fw != nil {
		return fw, nil
	}
	secret, err := f.node.Secret(ctx)
	if err != nil {
		return nil, err
	}
	fw = &forwarder{secret: secret, id: f.ID()}
	f.mu.Lock()
	f.client = fw
	f.mu.Unlock()
	return fw, nil
}

// Trusted reports whether r was forwarded by another host of the cluster
// (it carries the cluster's secret), and returns the caller it names (nil:
// full access).
func (f *Fleet) Trusted(r *http.Request) (caller []byte, ok bool) {
	if r.Header.Get(HeaderForwardedBy) == "" {
		return nil, false
	}
	scheme, secret, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return nil, false
	}
	fw, err := f.forwarder(r.Context())
	if err != nil || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(secret)), []byte(fw.secret)) != 1 {
		return nil, false
	}
	if c := r.Header.Get(HeaderCaller); c != "" {
		return []byte(c), true
	}
	return nil, true
}
