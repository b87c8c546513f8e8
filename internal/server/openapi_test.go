package server

import (
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIDescribesEveryRoute: api/openapi.yaml names every route the
// server registers, and the server serves every operation it names.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	b, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]*\}`)
	norm := func(method, path string) string {
		return strings.ToUpper(method) + " " + param.ReplaceAllString(path, "{}")
	}
	var inSpec []string
	for path, ops := range spec.Paths {
		for method := range ops {
			switch method {
			case "get", "put", "post", "delete", "patch", "head":
				inSpec = append(inSpec, norm(method, path))
			}
		}
	}
	s := &Server{Log: slog.New(slog.DiscardHandler)}
	_, patterns := s.routes()
	var served []string
	for _, p := range patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			t.Errorf("route %q has no method", p)
			continue
		}
		served = append(served, norm(method, path))
	}
	if len(served) < 30 {
		t.Fatalf("only %d routes recorded: %q", len(served), served)
	}
	for _, r := range served {
		if !slices.Contains(inSpec, r) {
			t.Errorf("route %s is served but not in api/openapi.yaml", r)
		}
	}
	for _, r := range inSpec {
		if !slices.Contains(served, r) {
			t.Errorf("api/openapi.yaml describes %s, which the server does not serve", r)
		}
	}
}
