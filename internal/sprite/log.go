package sprite

// Log keys, one place for all of them.
const (
	LogSprite = "sprite"
	LogErr    = "err"
)
