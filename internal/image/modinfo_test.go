package image

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	blob := []byte("license=GPL\x00depends=virtio,virtio_ring\x00\x00name=virtio_blk\x00alias=a\x00alias=b\x00vermagic=6.1.0 SMP mod_unload\x00")
	m := parseModinfo(blob)
	if m["name"] != "virtio_blk" || m["depends"] != "virtio,virtio_ring" || m["vermagic"] != "6.1.0 SMP mod_unload" {
		t.Fatalf("parseModinfo = %v", m)
	}
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"virtio", []string{"virtio"}},
		{"virtio,virtio-ring,", []string{"virtio", "virtio_ring"}},
	} {
		if got := splitDepends(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitDepends(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestOrderModules(t *testing.T) {
	for _, tc := range []struct {
		name string
		deps map[string][]string
		want string // space-separated order, or an error substring
		err  bool
	}{
		{name: "empty", deps: map[string][]string{}, want: ""},
		{name: "virtio", deps: map[string][]string{
			"virtio_net":            {"virtio", "virtio_ring", "net_failover"},
			"net_failover":          {"failover"},
			"failover":              nil,
			"virtio_ring":           {"virtio"},
			"virtio":                nil,
			"virtio_blk":            {"virtio", "virtio_ring"},
			"virtio_pci":            {"virtio_pci_modern_dev", "virtio", "virtio_ring", "virtio_pci_legacy_dev"},
			"virtio_pci_modern_dev": nil,
			"virtio_pci_legacy_dev": nil,
		}, want: "failover net_failover virtio virtio_ring virtio_blk virtio_net virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci"},
		{name: "builtin dep skipped", deps: map[string][]string{"overlay": {"ext4"}}, want: "overlay"},
		{name: "cycle", deps: map[string][]string{"a": {"b"}, "b": {"c"}, "c": {"a"}}, want: "cycle: a -> b -> c -> a", err: true},
		{name: "self", deps: map[string][]string{"a": {"a"}}, want: "cycle", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := orderModules(tc.deps)
			if tc.err {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.Join(got, " "); s != tc.want {
				t.Fatalf("order = %q, want %q", s, tc.want)
			}
		})
	}
}

func TestReadModinfo(t *testing.T) {
	p := t.TempDir() + "/virtio-blk.ko"
	writeFakeKO(t, p, "name=virtio_blk\x00depends=virtio,virtio_ring\x00")
	name, deps, err := readModinfo(p)
	if err != nil || name != "virtio_blk" || !reflect.DeepEqual(deps, []string{"virtio", "virtio_ring"}) {
		t.Fatalf("readModinfo = %q %q %v", name, deps, err)
	}
}

// writeFakeKO writes the smallest ELF file debug/elf accepts with a
// .modinfo section holding modinfo.
func writeFakeKO(t *testing.T, path, modinfo string) {
	t.Helper()
	shstr := "\x00.modinfo\x00.shstrtab\x00"
	const hdr = 64
	infoOff := uint64(hdr)
	strOff := infoOff + uint64(len(modinfo))
	shOff := strOff + uint64(len(shstr))
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: 1,
		Shoff: shOff, Ehsize: hdr, Shentsize: 64, Shnum: 3, Shstrndx: 2,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	binary.Write(&b, binary.LittleEndian, h)
	b.WriteString(modinfo)
	b.WriteString(shstr)
	for _, s := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Off: infoOff, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1},
	} {
		binary.Write(&b, binary.LittleEndian, s)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
