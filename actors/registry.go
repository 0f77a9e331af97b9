package actors

import (
	"math"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// registry is the parent and supervisor of every channel actor. It owns the
// map from channel name to PID; because creating, routing to and
// passivating a channel all happen in its one mailbox, a message can never
// reach a channel that is being stopped, nor two actors serve one channel.
type registry struct {
	cfg      *Config
	children map[string]*channelChild
	names    map[string]string // PID Id -> channel name, for Terminated
}

type channelChild struct {
	pid *actor.PID
	// routed counts the messages forwarded to the child; see channelIdle.
	routed uint64
}

// channelSupervisor restarts a crashed channel every time: a channel that
// stopped for good would silently lose its subscribers. The restart itself
// tells them (reset), and the restart counter shows a crash loop.
var channelSupervisor = actor.NewOneForOneStrategy(math.MaxInt32, time.Second, func(any) actor.Directive {
	return actor.RestartDirective
})

func registryProps(cfg *Config) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &registry{cfg: cfg, children: make(map[string]*channelChild), names: make(map[string]string)}
	}, actor.WithSupervisor(channelSupervisor), actor.WithDispatcher(cfg.workers))
}

func (r *registry) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case channelMessage:
		// Never create a channel only to remove a subscriber from it, but
		// do for a client's unsub: the channel sends its ack.
		if u, ok := m.(*unsubscribe); ok && !u.Ack && r.children[u.Channel] == nil {
			return
		}
		child := r.child(ctx, m.channelName())
		child.routed++
		ctx.Forward(child.pid)
	case *channelIdle:
		child, ok := r.children[m.Channel]
		if ok && child.pid.Equal(ctx.Sender()) && child.routed == m.Received {
			r.remove(child.pid)
			ctx.Stop(child.pid)
		}
	case *actor.Terminated:
		// A child stops on passivation (already removed) or when the
		// system shuts down.
		r.remove(m.Who)
	}
}

func (r *registry) child(ctx actor.Context, name string) *channelChild {
	if c, ok := r.children[name]; ok {
		return c
	}
	pid := ctx.Spawn(channelProps(r.cfg, name))
	c := &channelChild{pid: pid}
	r.children[name] = c
	r.names[pid.Id] = name
	return c
}

func (r *registry) remove(pid *actor.PID) {
	name, ok := r.names[pid.Id]
	if !ok {
		return
	}
	delete(r.names, pid.Id)
	if c := r.children[name]; c != nil && c.pid.Equal(pid) {
		delete(r.children, name)
	}
}
