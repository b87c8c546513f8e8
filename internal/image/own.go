package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Images of one's own are made from a sprite's disk (wisp image save) or
// by running a recipe in a sprite of another image (wisp image build NAME
// --from IMAGE), and kept beside the built-in ones under roots/.

// Save publishes image name with the root image that fill writes at the
// path it is given (a clone of a sprite's disk). base names the image it
// derives from, whose contents it inherits. Saving over an image of one's
// own replaces it; the names of the built-in images are refused. Nothing is
// left behind on failure.
func (s *Store) Save(name string, recipe Recipe, fill func(dst string) error) (Info, error) {
	if err := CheckOwnName(name); err != nil {
		return Info{}, err
	}
	defer s.lock("root/" + name)()
	out, err := s.workDir("save-" + name)
	if err != nil {
		return Info{}, err
	}
	defer os.RemoveAll(out)
	img := filepath.Join(out, "root.ext4")
	if err := fill(img); err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(img)
	if err != nil {
		return Info{}, err
	}
	rec := rootRecord{Name: name, BuiltAt: time.Now().UTC(), SizeBytes: fi.Size(), Recipe: &recipe}
	if recipe.From != "" {
		if base, err := s.Info(recipe.From); err == nil {
			rec.Contents = base.Contents
		}
		rec.Description = "from " + recipe.From
	}
	if recipe.Sprite != "" {
		rec.Description = "saved from sprite " + recipe.Sprite
		if recipe.From != "" {
			rec.Description += " (image " + recipe.From + ")"
		}
	}
	if err := writeJSONAtomic(filepath.Join(out, "meta.json"), rec); err != nil {
		return Info{}, err
	}
	if err := s.publish(name, out); err != nil {
		return Info{}, err
	}
	s.log().Info("image saved", "image", name, "from", recipe.From, "sprite", recipe.Sprite)
	return s.Info(name)
}

// CheckOwnName checks the name of an image of one's own: valid, and not
// one of the built-in images'.
func CheckOwnName(name string) error {
	if _, builtin := rootDefs[name]; builtin {
		return errdefs.WithHint(fmt.Errorf("image %q is built in: %w", name, errdefs.ErrInvalid), "choose another name")
	}
	return ValidateName(name)
}

// Remove removes image name of one's own. Sprites made from it keep their
// disks (they are clones). The built-in images cannot be removed.
func (s *Store) Remove(name string) error {
	if _, builtin := rootDefs[name]; builtin {
		return errdefs.WithHint(fmt.Errorf("image %q is built in: %w", name, errdefs.ErrInvalid), "rebuild it with `wisp image build "+name+"`")
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	defer s.lock("root/" + name)()
	link := filepath.Join(s.rootsDir(), name)
	target, err := os.Readlink(link)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image %q: %w", name, ErrUnknown)
	}
	if err != nil {
		return err
	}
	if err := os.Remove(link); err != nil {
		return err
	}
	s.log().Info("image removed", "image", name)
	return os.RemoveAll(filepath.Join(s.rootsDir(), filepath.Base(target)))
}
