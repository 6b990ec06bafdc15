package longpoll

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-longpoll/longpoll/poller"
	"github.com/caddy-longpoll/longpoll/store"
)

// metrics are kept with the store (in the pool), so that counters carry on
// across config reloads; each config generation registers the same
// collectors into its own registry.
type metrics struct {
	collectors        []prometheus.Collector
	published         prometheus.Counter
	answered          prometheus.Counter
	timeouts          prometheus.Counter
	pollsRejected     *prometheus.CounterVec
	publishesRejected *prometheus.CounterVec
}

func newMetrics(p *poller.Poller, s store.Store) *metrics {
	const ns, sub = "caddy", "longpoll"
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "messages_published_total",
			Help: "Messages published (idempotent retries not counted).",
		}),
		answered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "polls_answered_total",
			Help: "Polls answered with messages or a gap.",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_timeouts_total",
			Help: "Polls answered 304 Not Modified after their timeout.",
		}),
		pollsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "polls_rejected_total",
			Help: "Polls refused, by reason.",
		}, []string{"reason"}),
		publishesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "publishes_rejected_total",
			Help: "Requests to the publish endpoint refused, by reason.",
		}, []string{"reason"}),
	}
	m.collectors = []prometheus.Collector{
		m.published, m.answered, m.timeouts, m.pollsRejected, m.publishesRejected,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "held_polls",
			Help: "Polls held now.",
		}, func() float64 { return float64(p.Held()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "channels",
			Help: "Channels the store keeps state for.",
		}, func() float64 { return float64(s.Channels()) }),
	}
	return m
}

func (m *metrics) register(r *prometheus.Registry) error {
	if r == nil {
		return nil
	}
	for _, c := range m.collectors {
		if err := r.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}
