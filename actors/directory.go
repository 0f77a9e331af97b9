package actors

import "sync"

// directory maps a connection actor's PID Id to its outbox, so that channel
// actors can push into the outboxes of their subscribers while every
// message between actors stays plain data (a subscribe carries a PID, not
// a pointer). It is node-local, as connections are: in a multi-node relay
// each node's channel actor fans out to its own node's connections.
//
// Concurrency: guarded by mu. A lookup happens once per subscribe, an add
// and a remove once per connection.
type directory struct {
	mu sync.Mutex
	m  map[string]*outbox // guarded by mu
}

func newDirectory() *directory { return &directory{m: make(map[string]*outbox)} }

func (d *directory) add(id string, o *outbox) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[id] = o
}

func (d *directory) remove(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.m, id)
}

// lookup returns the outbox of a connection, or nil when it has stopped.
func (d *directory) lookup(id string) *outbox {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[id]
}
