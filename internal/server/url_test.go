package server

import (
	"strings"
	"testing"
)

func TestSiteURLs(t *testing.T) {
	for _, tc := range []struct {
		addr       string
		site       Site
		cred       string
		main, path string
	}{
		{"127.0.0.1:7780", Site{Sprite: "web", Port: 8080, Bare: true}, "", "http://web.localhost:7780/", "http://127.0.0.1:7780/s/web/"},
		{"127.0.0.1:7780", Site{Sprite: "web", Port: 3000}, "v1.web.3000.9.x-y_z", "http://3000.web.localhost:7780/?_wisp=v1.web.3000.9.x-y_z", "http://127.0.0.1:7780/s/3000.web/?_wisp=v1.web.3000.9.x-y_z"},
		{"0.0.0.0:80", Site{Sprite: "a", Port: 8080, Bare: true}, "", "http://a.localhost:80/", "http://127.0.0.1:80/s/a/"},
		{"[::1]:7780", Site{Sprite: "a", Port: 8080, Bare: true}, "", "http://a.localhost:7780/", "http://[::1]:7780/s/a/"},
		{"192.0.2.5:7780", Site{Sprite: "a", Port: 8080, Bare: true}, "", "http://192.0.2.5:7780/s/a/", "http://192.0.2.5:7780/s/a/"},
	} {
		main, path := siteURLs(tc.addr, tc.site, tc.cred)
		if main != tc.main || path != tc.path {
			t.Errorf("siteURLs(%q, %+v) = %q, %q; want %q, %q", tc.addr, tc.site, main, path, tc.main, tc.path)
		}
		// Every URL the API hands out routes back to its site.
		for _, u := range []string{main, path} {
			rest := u[len("http://"):]
			host, p := rest, "/"
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				host, p = rest[:i], rest[i:]
			}
			if i := strings.IndexByte(p, '?'); i >= 0 {
				p = p[:i]
			}
			got, _, _, err := Route(host, p)
			if err != nil || got.Sprite != tc.site.Sprite || got.Port != tc.site.Port {
				t.Errorf("%s routes to %+v, %v", u, got, err)
			}
		}
	}
}
