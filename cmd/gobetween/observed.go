package main

import (
	"context"
	"sync"

	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/proxy"
)

// shareObserved joins the data path and the gossip: the node publishes what the
// runtime observes of every backend, and the runtime balances with what the
// other nodes report. It returns when ctx is done. Without gossip (a single
// node) the view stays empty and every verdict is the node's own.
func shareObserved(ctx context.Context, node *cluster.Node, rt *proxy.Runtime) {
	var mu sync.Mutex // the buffer, should the node ever observe from two goroutines
	var buf []proxy.Observation
	node.SetObserver(func(dst []cluster.Observation) []cluster.Observation {
		mu.Lock()
		defer mu.Unlock()
		buf = rt.Observe(buf)
		dst = dst[:0]
		for _, o := range buf {
			dst = append(dst, cluster.Observation{
				Server: o.Server, Backend: o.Backend, Healthy: o.Healthy,
				Conns: o.Conns, RxBps: o.RxBps, TxBps: o.TxBps, Capped: o.Capped,
			})
		}
		return dst
	})
	changed, cancel := node.SubscribeObserved()
	defer cancel()
	for {
		rt.SetPeers(peerView{node.Observed()})
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// peerView adapts cluster.ObservedView to proxy.PeerView.
type peerView struct{ v *cluster.ObservedView }

func (p peerView) Backend(server, backend string) proxy.PeerBackend {
	s := p.v.Sum(server, backend)
	return proxy.PeerBackend{
		Nodes: s.Nodes, Healthy: s.Healthy, Conns: s.Conns,
		RxBps: s.RxBps, TxBps: s.TxBps,
	}
}

func (p peerView) Verdicts(server, backend string) []proxy.NodeVerdict {
	reports := p.v.Reports(server, backend)
	if len(reports) == 0 {
		return nil
	}
	out := make([]proxy.NodeVerdict, len(reports))
	for i, r := range reports {
		out[i] = proxy.NodeVerdict{Node: r.NodeID, Healthy: r.Healthy}
	}
	return out
}
