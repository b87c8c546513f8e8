package api

import (
	"io/fs"
	"time"
)

// Files of a sprite over plain HTTP (path is absolute, in the sprite):
//
//	GET    /v1/sprites/{name}/fs/stat?path=P      FileInfo
//	GET    /v1/sprites/{name}/fs/list?path=P      FileList
//	POST   /v1/sprites/{name}/fs/mkdir            MkdirRequest
//	DELETE /v1/sprites/{name}/fs?path=P[&recursive=true]
//	GET    /v1/sprites/{name}/fs/file?path=P      the file's bytes
//	PUT    /v1/sprites/{name}/fs/file?path=P[&mode=0644][&user=U]   body: the bytes
//	GET    /v1/sprites/{name}/fs/tar?path=P       a tar of P, entries named from its base name
//	PUT    /v1/sprites/{name}/fs/tar?path=DIR[&user=U]   body: a tar to unpack in DIR
//
// A body that breaks off (the connection ends early) means the read or
// copy failed part way.

// FileInfo describes one file in a sprite.
type FileInfo struct {
	Name    string      `json:"name"`
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"` // Go's fs.FileMode bits
	ModTime time.Time   `json:"mod_time"`
	IsDir   bool        `json:"is_dir"`
	Link    string      `json:"link,omitempty"` // a symlink's target
}

// FileList is the answer of fs/list.
type FileList struct {
	Files     []FileInfo `json:"files"`
	Truncated bool       `json:"truncated"` // the directory holds more
}

// MkdirRequest is the body of fs/mkdir.
type MkdirRequest struct {
	Path      string `json:"path"`
	Mode      uint32 `json:"mode,omitempty"`
	Recursive bool   `json:"recursive,omitempty"`
}
