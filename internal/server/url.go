package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/auth"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// maxURLTTL bounds a signed URL's life.
const maxURLTTL = 366 * 24 * time.Hour

func (s *Server) url(w http.ResponseWriter, r *http.Request) {
	var req api.URLRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if s.FrontDoor == "" {
		writeError(w, errdefs.WithHint(fmt.Errorf("the front door is off: %w", errdefs.ErrUnavailable), "start wispd with --http-addr 127.0.0.1:7780"))
		return
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if ttl == 0 {
		ttl = time.Hour
	}
	if req.Port < 0 || req.Port > 65535 || ttl < 0 || ttl > maxURLTTL {
		writeError(w, fmt.Errorf("port %d, ttl %s: want a port 1-65535 and a ttl up to %s: %w", req.Port, ttl, maxURLTTL, errdefs.ErrInvalid))
		return
	}
	sp, err := s.Sprites.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	site := Site{Sprite: sp.Name, Port: req.Port}
	if req.Port == 0 {
		// The sprite's default port: its first service's --port, else 8080.
		site.Port, site.Bare = sp.URLPort(), true
	}
	info := api.URLInfo{Sprite: sp.Name, Port: site.Port, Public: sp.URLPublic}
	var cred string
	if req.Signed {
		info.ExpiresAt = time.Now().Add(ttl).Truncate(time.Second).UTC()
		cred = s.URLKey.Sign(auth.Grant{Sprite: sp.Name, Port: site.Port, Expires: info.ExpiresAt})
	}
	info.URL, info.PathURL = siteURLs(s.FrontDoor, site, cred)
	writeJSON(w, 200, info)
}

// siteURLs returns the URLs of site on the front door at addr: the host
// form (or the path form, where the front door does not listen on a
// loopback or wildcard address and so clients cannot use *.localhost),
// and the path form.
func siteURLs(addr string, site Site, cred string) (primary, path string) {
	host, port, _ := net.SplitHostPort(addr)
	ip, _ := netip.ParseAddr(host)
	q := ""
	if cred != "" {
		q = "?" + CredParam + "=" + url.QueryEscape(cred)
	}
	pathHost := host
	if ip.IsUnspecified() || host == "" {
		pathHost = "127.0.0.1"
	}
	path = "http://" + net.JoinHostPort(pathHost, port) + pathPrefix + site.Label() + "/" + q
	if ip.IsLoopback() || ip.IsUnspecified() || host == "" || host == "localhost" {
		return "http://" + site.Label() + ".localhost:" + port + "/" + q, path
	}
	return path, path
}
