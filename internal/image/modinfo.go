package image

import (
	"bytes"
	"debug/elf"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// parseModinfo parses a .ko's .modinfo section: NUL-separated key=value
// strings. Repeated keys (alias=, parm=) keep the last value; we only use
// name= and depends=.
func parseModinfo(blob []byte) map[string]string {
	m := map[string]string{}
	for _, f := range bytes.Split(blob, []byte{0}) {
		k, v, ok := strings.Cut(string(f), "=")
		if ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// modName normalises a module name the way the kernel does ("virtio-rng" and
// "virtio_rng" are one module).
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// splitDepends splits a depends= value ("virtio,virtio_ring" or "").
func splitDepends(v string) []string {
	var deps []string
	for _, d := range strings.Split(v, ",") {
		if d = strings.TrimSpace(d); d != "" {
			deps = append(deps, modName(d))
		}
	}
	return deps
}

// readModinfo returns a module's name and direct dependencies, read from the
// .modinfo section of the (uncompressed) ELF object at path.
func readModinfo(path string) (name string, deps []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("modinfo %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return "", nil, fmt.Errorf("modinfo %s: no .modinfo section", path)
	}
	blob, err := sec.Data()
	if err != nil {
		return "", nil, fmt.Errorf("modinfo %s: %w", path, err)
	}
	info := parseModinfo(blob)
	name = info["name"]
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(path), ".ko")
	}
	return modName(name), splitDepends(info["depends"]), nil
}

// orderModules returns the modules of deps in load order: every module after
// the modules it depends on. Dependencies that are not keys of deps are
// skipped (they are built into the kernel). Ties are broken by name so the
// order is stable. A dependency cycle is an error.
func orderModules(deps map[string][]string) ([]string, error) {
	names := make([]string, 0, len(deps))
	for n := range deps {
		names = append(names, n)
	}
	sort.Strings(names)

	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(path, n), " -> "))
		}
		state[n] = visiting
		ds := append([]string(nil), deps[n]...)
		sort.Strings(ds)
		for _, d := range ds {
			if _, ok := deps[d]; !ok {
				continue // built in
			}
			if err := visit(d, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = done
		order = append(order, n)
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
