//go:build !linux

package bench

// pollers exist on Linux only (epoll); elsewhere every subscriber has a
// reader goroutine.
type pollers struct{}

func newPollers() *pollers          { return nil }
func (ps *pollers) add(*subscriber) {}
func (ps *pollers) stop()           {}
