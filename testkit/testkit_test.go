package testkit

import (
	"strings"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	got := ParseMetrics(t, strings.NewReader(`# HELP a_total A help text.
# TYPE a_total counter
a_total{reason="no token",route="/mcp"} 3

b_seconds_bucket{le="+Inf"} 1.5e+06
c 0
`))
	want := map[string]float64{
		`a_total{reason="no token",route="/mcp"}`: 3,
		`b_seconds_bucket{le="+Inf"}`:             1.5e6,
		`c`:                                       0,
	}
	if len(got) != len(want) {
		t.Errorf("got %d samples %v, want %d", len(got), got, len(want))
	}
	for series, v := range want {
		if g, ok := got[series]; !ok || g != v {
			t.Errorf("%s: got %v (present %v), want %v", series, g, ok, v)
		}
	}
}

func TestJSONLines(t *testing.T) {
	got := JSONLines(t, "{\"@message\":\"a\"}\n\n{\"@message\":\"b\",\"n\":1}\n")
	if len(got) != 2 || got[0]["@message"] != "a" || got[1]["@message"] != "b" {
		t.Errorf("got %v, want the lines a and b", got)
	}
}

func TestClock(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	c := NewClock(start)
	if got := c.Now(); !got.Equal(start) {
		t.Errorf("Now() = %v, want %v", got, start)
	}
	c.Advance(90 * time.Second)
	if got, want := c.Now(), start.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("after Advance: Now() = %v, want %v", got, want)
	}
}
