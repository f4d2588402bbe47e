package inflight

import "testing"

func TestCounter(t *testing.T) {
	c := New(2)
	if !c.Start("a") || !c.Start("a") {
		t.Fatal("a's first two refused")
	}
	if c.Start("a") {
		t.Error("a's third admitted past the bound of 2")
	}
	if !c.Start("b") {
		t.Error("b refused for a's count")
	}
	c.Done("a")
	if c.Count("a") != 1 || !c.Start("a") {
		t.Errorf("after one of a's ended: count %d, or the next refused", c.Count("a"))
	}
	c.Done("a")
	c.Done("a")
	c.Done("b")
	if len(c.n) != 0 {
		t.Errorf("keys with nothing in progress kept: %v", c.n)
	}
	var none *Counter = New(0)
	if none != nil || !none.Start("a") || none.Count("a") != 0 {
		t.Error("New(0) bounds something")
	}
	none.Done("a")
}
