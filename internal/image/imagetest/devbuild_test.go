package imagetest

import "testing"

func TestNeedDev(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dev image")
	}
	t.Log(NeedDev(t))
}
