package e2b

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Snapshots are wisp images: the sandbox pauses (its sprite sleeps), its
// disk is saved as an image (a reflink in the storage pool), and it
// resumes. Sandbox.create(snapshotID) makes sandboxes of that image, as of
// any template. What E2B's snapshots keep and these do not: memory and
// processes (a sandbox of a snapshot boots).

// snapshotNote marks the images that are E2B snapshots; the sandbox's ID
// follows it.
const snapshotNote = "(wisp: E2B snapshot of sandbox "

func (h *Handler) snapshot(w http.ResponseWriter, r *http.Request) {
	if h.opt.Images == nil {
		apiError(w, http.StatusNotImplemented, "snapshots need wispd's image store")
		return
	}
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	sb, ok := h.sandbox(w, r)
	if !ok {
		return
	}
	name := req.Name
	if name == "" {
		name = "snap-" + token(6)
	}
	if _, _, exists := h.opt.Images.Built(name); exists {
		apiError(w, http.StatusConflict, fmt.Sprintf("a template or snapshot %q exists", name))
		return
	}
	ctx := context.WithoutCancel(r.Context())
	if !sb.Paused {
		h.detachLive(sb.ID)
		if _, err := h.opt.Sprites.Sleep(ctx, sb.ID); err != nil && errdefs.Kind(err) != errdefs.ErrState {
			writeErr(w, err)
			return
		}
	}
	err := h.opt.Images.SaveSprite(ctx, sb.ID, name, sb.Image, snapshotNote+sb.ID+")")
	if !sb.Paused {
		if _, release, werr := h.opt.Sprites.Agent(ctx, sb.ID); werr == nil {
			release()
		} else if err == nil {
			err = werr
		}
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	h.log.Info("e2b snapshot", "sandbox", sb.ID, "snapshot", name)
	writeJSON(w, http.StatusCreated, map[string]any{"snapshotID": name, "names": []string{name}})
}

// snapshots lists the snapshots, of one sandbox (sandboxID) or all.
func (h *Handler) snapshots(w http.ResponseWriter, r *http.Request) {
	out := []map[string]any{}
	if h.opt.Images != nil {
		notes, err := h.opt.Images.Notes(snapshotNote)
		if err != nil {
			writeErr(w, err)
			return
		}
		of := r.URL.Query().Get("sandboxID")
		names := make([]string, 0, len(notes))
		for name, note := range notes {
			if of == "" || strings.TrimSuffix(strings.TrimPrefix(note, snapshotNote), ")") == of {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, map[string]any{"snapshotID": n, "names": []string{n}})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteSnapshot removes a snapshot (E2B deletes them as templates);
// other images are not E2B's to remove.
func (h *Handler) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if h.opt.Images != nil {
		if notes, err := h.opt.Images.Notes(snapshotNote); err == nil {
			if _, ok := notes[id]; ok {
				if err := h.opt.Images.Remove(id); err != nil {
					writeErr(w, err)
					return
				}
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
	}
	apiError(w, http.StatusNotFound, fmt.Sprintf("snapshot %q not found", id))
}
