package gate

import "sync"

// inFlight counts the admitted requests of each token subject until they
// end (Config.MaxConcurrentPerSubject). It holds only subjects with a
// request in flight. Its methods do nothing on a nil *inFlight.
type inFlight struct {
	max int

	mu sync.Mutex
	n  map[string]int
}

// newInFlight returns a count with bound max, or nil (no bound) when max
// is not positive.
func newInFlight(max int) *inFlight {
	if max <= 0 {
		return nil
	}
	return &inFlight{max: max, n: map[string]int{}}
}

// start counts w's request for sub and reports whether it may go on: false
// when sub already has max requests in flight, and then nothing is counted.
func (f *inFlight) start(w *recorder, sub string) bool {
	if f == nil {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[sub] >= f.max {
		return false
	}
	f.n[sub]++
	w.counted, w.subject = true, sub
	return true
}

// done ends the count of w's request, if start counted it; once.
func (f *inFlight) done(w *recorder) {
	if f == nil || !w.counted {
		return
	}
	w.counted = false
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[w.subject]--; f.n[w.subject] <= 0 {
		delete(f.n, w.subject)
	}
}
