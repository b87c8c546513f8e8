package e2b

import (
	"context"
	"errors"
	"time"

	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// A template's image made ready for E2B: while a template's image lacks
// E2B's user, every sandbox of it gets the user made (ensureUser, ~100 ms
// under gVisor). The first such create also starts, in the background, a
// throwaway sprite of the image in which the user is made and whose disk
// is then saved (a reflink) as the image e2b-IMAGE: later sandboxes of the
// template are made from it and start with the user. An image rebuilt
// after it was derived is derived again.

// derivedName is the image derived from img.
func derivedName(img string) string { return "e2b-" + img }

// derived returns the image derived from img, if it is there, newer than
// img and no larger than img's size in whole GiB (an image keeps the disk
// size of the sprite it was saved from, and sprites of it need at least
// that: it must fit wherever img does).
func (h *Handler) derived(img string) (string, bool) {
	if h.opt.Images == nil {
		return "", false
	}
	src, srcSize, ok := h.opt.Images.Built(img)
	if !ok {
		return "", false
	}
	d := derivedName(img)
	at, size, ok := h.opt.Images.Built(d)
	if !ok || at.Before(src) || size > gibs(srcSize)<<30 {
		return "", false
	}
	return d, true
}

// gibs is size in whole GiB, rounded up, at least 1.
func gibs(size int64) int64 { return max(1, (size+(1<<30)-1)>>30) }

// derive makes the image derived from img in the background, once per
// daemon and build of img. A failure only costs later creates the
// user's making.
func (h *Handler) derive(o sprite.CreateOptions) {
	img := o.Image
	if h.opt.Images == nil {
		return
	}
	src, _, ok := h.opt.Images.Built(img)
	key := img + "@" + src.String()
	h.tplMu.Lock()
	defer h.tplMu.Unlock()
	if _, done := h.derived(img); done || !ok || h.tplDone[key] {
		return
	}
	h.tplDone[key] = true // tried: not again for this build of img
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t0 := time.Now()
		if err := h.deriveNow(o); err != nil {
			h.log.Warn("e2b: saving the template's image with its user", "image", img, "err", err)
			return
		}
		h.log.Info("e2b: template image saved with its user", "image", derivedName(img), "from", img, "took", time.Since(t0).Round(time.Millisecond))
	}()
}

func (h *Handler) deriveNow(o sprite.CreateOptions) error {
	ctx, cancel := context.WithTimeout(h.closing, 5*time.Minute)
	defer cancel()
	_, size, _ := h.opt.Images.Built(o.Image)
	o.Name, o.Env, o.Policy = "e2b-template-"+token(4), nil, network.Policy{Mode: network.DenyAll}
	o.DiskGiB = int(gibs(size)) // the smallest disk: the image fits wherever its source does
	if _, err := h.opt.Sprites.Create(ctx, o); err != nil {
		return err
	}
	defer h.opt.Sprites.Destroy(context.WithoutCancel(ctx), o.Name)
	if _, made, err := h.ensureUser(ctx, o.Name); err != nil || !made {
		return errors.Join(err, errors.New("the user was not made"))
	}
	// Stopped, its disk is whole without a freeze (a copy into an image
	// folder outside the storage pool takes longer than a freeze may).
	if _, err := h.opt.Sprites.Stop(ctx, o.Name); err != nil {
		return err
	}
	return h.opt.Images.SaveSprite(ctx, o.Name, derivedName(o.Image), o.Image, "(wisp: E2B's user `user` made, for sandboxes of template "+o.Image+")")
}
