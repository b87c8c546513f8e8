package api

import "time"

// Image is one root image: GET /v1/images lists them.
type Image struct {
	Name        string    `json:"name"`
	Built       bool      `json:"built"`
	Path        string    `json:"path,omitempty"`
	SizeBytes   int64     `json:"size_bytes,omitempty"`
	BuiltAt     time.Time `json:"built_at,omitzero"`
	SHA256      string    `json:"sha256,omitempty"`
	Description string    `json:"description"`
	// Contents names what the image holds and at which version.
	Contents     map[string]string `json:"contents,omitempty"`
	BuildSeconds float64           `json:"build_seconds,omitempty"`
	Recipe       *Recipe           `json:"recipe,omitempty"`
	// Key identifies the built-in recipe it was built from.
	Key string `json:"key,omitempty"`
}

// Recipe is how an image of one's own was made.
type Recipe struct {
	From   string   `json:"from"`
	Run    []string `json:"run,omitempty"`
	Copy   []string `json:"copy,omitempty"`   // LOCAL:/path, as given
	Sprite string   `json:"sprite,omitempty"` // saved from this sprite's disk
}

// SaveImageRequest is the body of POST /v1/images/{name}/save: the sprite
// whose disk becomes the image and, optionally, the recipe that made it.
type SaveImageRequest struct {
	Sprite string  `json:"sprite"`
	Recipe *Recipe `json:"recipe,omitempty"`
}

// Progress is a step of a long operation (an image build).
type Progress struct {
	Step  int    `json:"step"`
	Steps int    `json:"steps"`
	Phase string `json:"phase"`
	Done  int    `json:"done,omitempty"`
	Total int    `json:"total,omitempty"`
	Log   string `json:"log,omitempty"` // the file the build's command output goes to
}

// BuildEvent is one line of the NDJSON body of POST /v1/images/{name}/build:
// progress, then the built image or an error.
type BuildEvent struct {
	Progress *Progress `json:"progress,omitempty"`
	Image    *Image    `json:"image,omitempty"`
	Error    *Error    `json:"error,omitempty"`
}
