package bench

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"
)

// pollers read the sockets of many subscribers from one goroutine per
// core. A reader goroutine per connection costs, for every frame it
// receives, a read that finds nothing (EAGAIN) and a park and wake in Go's
// scheduler besides the read itself; profiled in 1 channel x 1,000
// subscribers, that was about half the load generator's CPU, on the cores
// the relay is measured on. A poller asks its own epoll instance which
// sockets hold bytes and reads each once.
//
// Concurrency: add may be called from any goroutine (the dialers). Each
// poller's goroutine alone reads its subscribers, answers their pings and
// ends them; a subscriber's fields are the poller's until it has ended
// (done closed), as with a reader goroutine. The run ends a polled
// subscriber by shutting its socket down (wsConn.shutdown), which the
// poller sees as end of stream.
type pollers struct {
	ps   []*poller
	next int // round-robin over ps; guarded by mu
	mu   sync.Mutex
	wg   sync.WaitGroup
}

// poller is one epoll instance (level-triggered) and the goroutine that
// waits for it in Go's netpoller and reads the sockets it reports.
type poller struct {
	ep   *os.File        // the epoll instance, registered in Go's netpoller
	rc   syscall.RawConn // ep's
	epfd int             // ep's descriptor, open until stop
	mu   sync.Mutex
	sub  map[int32]*subscriber // by connection number; guarded by mu
	dead error                 // guarded by mu: why loop ended, nil while it runs
}

// pollBatch is how many ready sockets one epoll_wait returns at most.
const pollBatch = 256

// newPollers starts one poller per core, or returns nil when epoll cannot
// be had (the run then uses a goroutine per connection).
func newPollers() *pollers {
	ps := &pollers{}
	for range runtime.GOMAXPROCS(0) {
		p, err := newPoller()
		if err != nil {
			ps.stop()
			return nil
		}
		ps.ps = append(ps.ps, p)
		ps.wg.Go(p.loop)
	}
	return ps
}

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// Non-blocking, so that os.NewFile puts it in Go's netpoller: the
	// goroutine then parks there instead of holding a thread in epoll_wait.
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, err
	}
	ep := os.NewFile(uintptr(fd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, err
	}
	return &poller{ep: ep, rc: rc, epfd: fd, sub: make(map[int32]*subscriber)}, nil
}

// add hands s to a poller, which reads it from now on. s's socket must be
// pollable (s.conn.rc set: not TLS).
func (ps *pollers) add(s *subscriber) {
	ps.mu.Lock()
	p := ps.ps[ps.next%len(ps.ps)]
	ps.next++
	ps.mu.Unlock()
	key := int32(s.n)
	s.begin()
	p.mu.Lock()
	dead := p.dead
	if dead == nil {
		p.sub[key] = s
	}
	p.mu.Unlock()
	if dead != nil {
		_ = s.conn.nc.Close()
		s.end(dead)
		return
	}
	var err error
	cerr := s.conn.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: key}
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err = errors.Join(cerr, err); err != nil && p.drop(key) {
		_ = s.conn.nc.Close()
		s.end(err)
	}
}

// stop ends the pollers' goroutines and waits for them; each ends the
// subscribers it still reads (the run has ended them first: closeAll).
func (ps *pollers) stop() {
	for _, p := range ps.ps {
		_ = p.ep.Close() // wakes its goroutine with an error
	}
	ps.wg.Wait()
}

// loop waits for sockets with bytes and reads each once, until the epoll
// instance is closed or fails; then it ends the subscribers it still has,
// so that nobody waits for them.
func (p *poller) loop() {
	events := make([]syscall.EpollEvent, pollBatch)
	ready := make([]*subscriber, 0, pollBatch)
	var n int
	var werr error
	wait := func(fd uintptr) bool { // bound once: it escapes
		n, werr = syscall.EpollWait(int(fd), events, 0)
		switch {
		case werr == syscall.EINTR:
			n, werr = 0, nil
			return true // look again
		case werr != nil:
			return true
		}
		return n > 0 // else wait in Go's netpoller
	}
	for {
		err := p.rc.Read(wait)
		if err = errors.Join(err, werr); err != nil {
			p.endAll(err)
			return
		}
		ready = ready[:0]
		p.mu.Lock()
		for _, ev := range events[:n] {
			if s := p.sub[ev.Fd]; s != nil {
				ready = append(ready, s)
			}
		}
		p.mu.Unlock()
		for _, s := range ready {
			if s.pollRead() {
				// Closing the socket took it out of the epoll set.
				p.drop(int32(s.n))
			}
		}
	}
}

// endAll ends every subscriber the poller still reads, with err.
func (p *poller) endAll(err error) {
	p.mu.Lock()
	subs := p.sub
	p.sub, p.dead = map[int32]*subscriber{}, err
	p.mu.Unlock()
	for _, s := range subs {
		_ = s.conn.nc.Close()
		s.end(err)
	}
}

// drop forgets a subscriber, and reports whether it was there (endAll may
// have taken it).
func (p *poller) drop(key int32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.sub[key]
	delete(p.sub, key)
	return ok
}
