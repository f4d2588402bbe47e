package gate

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"
)

// sampler logs rejections at info, at most perSecond a second (burst the
// same); the rest are counted and the count is reported with the next line
// that gets through, so a flood cannot fill the logs (issue 6 item 3).
type sampler struct {
	log        hclog.Logger
	lim        *rate.Limiter
	now        func() time.Time
	suppressed atomic.Int64
}

func newSampler(log hclog.Logger, perSecond int, now func() time.Time) *sampler {
	return &sampler{log: log, lim: rate.NewLimiter(rate.Limit(perSecond), perSecond), now: now}
}

func (s *sampler) rejected(status int, reason, sub string, r *http.Request) {
	if !s.log.IsInfo() {
		return
	}
	if !s.lim.AllowN(s.now(), 1) {
		s.suppressed.Add(1)
		return
	}
	args := []any{"status", status, "reason", reason, "method", r.Method, "path", r.URL.Path, "client_ip", r.RemoteAddr}
	if sub != "" {
		args = append(args, "sub", sub)
	}
	if n := s.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	s.log.Info("rejected", args...)
}
