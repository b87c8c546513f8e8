package api

import (
	"net/url"
	"reflect"
	"testing"
	"time"
)

func TestExecRequestQuery(t *testing.T) {
	d := 90 * time.Second
	zero := time.Duration(0)
	for _, r := range []ExecRequest{
		{Cmd: []string{"sh", "-c", "echo a&b=c"}},
		{Cmd: []string{"bash"}, TTY: true, Stdin: true, Cols: 120, Rows: 40, Env: []string{"A=1", "B=x=y"}, Dir: "/tmp", User: "root", MaxRunAfterDisconnect: &d},
		{ID: "abc", MaxRunAfterDisconnect: &zero},
	} {
		got, err := ParseExecRequest(r.Query())
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("round trip of %+v: %+v %v", r, got, err)
		}
	}
	for _, q := range []string{
		"", "tty=true", "cmd=x&tty=maybe", "cmd=x&cols=0", "cmd=x&rows=10001", "cmd=x&cols=abc",
		"cmd=x&env=NOVALUE", "cmd=x&env==v", "cmd=x&max_run_after_disconnect=soon", "cmd=x&max_run_after_disconnect=-1s",
	} {
		v, _ := url.ParseQuery(q)
		if _, err := ParseExecRequest(v); err == nil {
			t.Errorf("%q: accepted", q)
		}
	}
}

func TestResizeCheck(t *testing.T) {
	for _, m := range []ResizeMessage{{"resize", 0, 1}, {"resize", 1, 0}, {"resize", MaxTermSize + 1, 1}, {"size", 80, 24}} {
		if m.Check() == nil {
			t.Errorf("%+v accepted", m)
		}
	}
	if err := (ResizeMessage{"resize", 80, 24}).Check(); err != nil {
		t.Error(err)
	}
}
